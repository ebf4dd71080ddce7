"""The memory's query similarity can compare learned topic memberships instead of the text embeddings, or the
text embeddings sharpened by the topic memberships."""

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


def _setup(space: str):
    torch.manual_seed(0)
    model = GMTRouter(GMTRouterConfig(emb_dim=D, hidden=16, topics=4, pref_dim=6, heads=2,
                                      memory_space=space)).eval()
    sub = _history([(0, [0, 1], [1.0, 0.0]), (1, [0, 2], [0.0, 1.0]), (2, [1, 2, 3], [0.5, 1.0, 0.0])])
    cat = _catalog()
    b = build_batch([sub], [Request(0, QUERIES[3], np.stack([cat[m] for m in LLMS]), list(LLMS))], cat, emb_dim=D)
    return model, b


def _cos(b, q_req, q_graph):
    turn = b.data["turn"]
    return (F.normalize(q_req, dim=-1) @ F.normalize(q_graph, dim=-1).T)[b.cand_req[b.mem_cand],
                                                                         turn.query_idx[b.mem_turn]]


def _by_hand(model, b, w):
    """The weighted average of the centered ratings, shrunk by the prior, per candidate."""
    r = b.data["response"].x[b.mem_turn, 0]
    want = torch.zeros(b.cand.size(0))
    for c in range(len(want)):
        mine = b.mem_cand == c
        if mine.any():
            want[c] = (w[mine] * r[mine]).sum() / (w[mine].sum() + model.memory.log_prior.exp())
    return want


def test_topic_memory_weighs_past_turns_by_topic_similarity():
    model, b = _setup("topics")
    with torch.no_grad():
        t_req, t_graph = model.topics(b.query), model.topics(b.data["query"].x)
        got = model.memory(b, *model.memory_space(t_req, t_graph))  # [N_c]
        text = model.memory(b)  # the text embeddings' similarity
        w = torch.exp(model.memory.log_tau.exp() * (_cos(b, t_req, t_graph) - 1.0))
    torch.testing.assert_close(got, _by_hand(model, b, w))
    assert not torch.allclose(got, text)  # a different similarity gives a different memory
    default = GMTRouter(GMTRouterConfig(emb_dim=D, hidden=16, topics=4, pref_dim=6, heads=2))
    assert default.memory_space(t_req, t_graph) == (None, None)  # the default reads the text embeddings
    assert default.memory.log_tau_topic is None  # and has no sharpening parameter (old checkpoints load)


def test_sharpened_memory_multiplies_text_and_topic_weights():
    model, b = _setup("both")
    with torch.no_grad():
        model.memory.log_tau_topic.fill_(np.log(3.0))
        t_req, t_graph = model.topics(b.query), model.topics(b.data["query"].x)
        got = model.memory(b, *model.memory_space(t_req, t_graph))  # [N_c]
        text = model.memory(b)
        w = (torch.exp(model.memory.log_tau.exp() * (_cos(b, b.query, b.data["query"].x) - 1.0))
             * torch.exp(3.0 * (_cos(b, t_req, t_graph) - 1.0)))
        want = _by_hand(model, b, w)
        model.memory.log_tau_topic.fill_(-30.0)  # tau_topic ~ 0: back to the text similarity alone
        flat = model.memory(b, *model.memory_space(t_req, t_graph))
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, text)
    torch.testing.assert_close(flat, text)
