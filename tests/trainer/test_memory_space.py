"""The memory's query similarity can compare learned topic memberships instead of the text embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainer.graph import Request, build_batch
from trainer.model import GMTRouter, GMTRouterConfig
from tests.trainer.test_monotone import D, LLMS, QUERIES, _catalog, _history


def test_unknown_memory_space_is_refused():
    with pytest.raises(ValueError, match="memory_space"):
        GMTRouterConfig(memory_space="words")


def test_topic_memory_weighs_past_turns_by_topic_similarity():
    torch.manual_seed(0)
    model = GMTRouter(GMTRouterConfig(emb_dim=D, hidden=16, topics=4, pref_dim=6, heads=2,
                                      memory_space="topics")).eval()
    sub = _history([(0, [0, 1], [1.0, 0.0]), (1, [0, 2], [0.0, 1.0]), (2, [1, 2, 3], [0.5, 1.0, 0.0])])
    cat = _catalog()
    b = build_batch([sub], [Request(0, QUERIES[3], np.stack([cat[m] for m in LLMS]), list(LLMS))], cat, emb_dim=D)
    with torch.no_grad():
        t_req, t_graph = model.topics(b.query), model.topics(b.data["query"].x)
        got = model.memory(b, model.memory_space(t_req, t_graph))  # [N_c]
        text = model.memory(b)  # the text embeddings' similarity
        # by hand: weights exp(tau (cos - 1)) over the topic memberships, shrunk by the prior
        turn = b.data["turn"]
        cos = (F.normalize(t_req, dim=-1) @ F.normalize(t_graph, dim=-1).T)[b.cand_req[b.mem_cand],
                                                                            turn.query_idx[b.mem_turn]]
        w = torch.exp(model.memory.log_tau.exp() * (cos - 1.0))
        r = b.data["response"].x[b.mem_turn, 0]
        want = torch.zeros_like(got)
        for c in range(len(got)):
            mine = b.mem_cand == c
            if mine.any():
                want[c] = (w[mine] * r[mine]).sum() / (w[mine].sum() + model.memory.log_prior.exp())
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, text)  # a different similarity gives a different memory
    assert GMTRouter(GMTRouterConfig(emb_dim=D, hidden=16, topics=4, pref_dim=6, heads=2)).memory_space(
        t_req, t_graph) is None  # the default reads the text embeddings
