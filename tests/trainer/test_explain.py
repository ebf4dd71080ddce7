"""A decision's explanation adds up: the per-turn pushes are the user's whole personal term, and the parts the
forward pass keeps ("terms") are the whole score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.explain import explain, pushes
from trainer.graph import Request, build_batch
from trainer.model import GMTRouter, GMTRouterConfig
from tests.trainer.test_monotone import D, LLMS, QUERIES, _catalog, _history


def _global(model: GMTRouter, b) -> np.ndarray:
    t_req, t_graph = model.topics(b.query), model.topics(b.data["query"].x)
    h = model.encoder(b, t_graph)
    return model.head(h[b.req_user][b.cand_req], t_req, b.cand_req, b.cand_unique, b.cand_inv).numpy()


@pytest.mark.parametrize("gate_scale,robust,space,levels", [
    (0.0, False, "text", False), (0.5, False, "text", False), (0.5, True, "text", False),
    (0.5, False, "topics", False), (0.5, False, "both", False), (0.5, False, "text", True),
    (0.5, False, "text", "per_llm")])
def test_pushes_sum_to_the_personal_term_and_name_the_turns(gate_scale, robust, space, levels):
    """Also with per-user evidence weights (random gates): the pushes use the user's own weights; with the
    robust prior, whose penalty is not quadratic (kappa small, so its linear part is reached); with the
    memory's similarity over topic memberships, or sharpened by them; and with the levels term."""
    torch.manual_seed(0)
    model = GMTRouter(GMTRouterConfig(emb_dim=D, hidden=16, topics=4, pref_dim=6, heads=2, robust_prior=robust,
                                      memory_space=space, levels=bool(levels),
                                      level_center_llm=levels == "per_llm")).eval()
    with torch.no_grad():
        if levels:
            model.level_weight.fill_(1.0)
            model.levels.center.fill_(-0.5)
            if model.levels.center_llm is not None:
                model.levels.center_llm.weight.normal_(0.0, 3.0)
        if robust:
            model.pref.log_kappa.fill_(np.log(0.3))
        model.mem_weight.fill_(1.0)
        model.gate.weight.normal_(0.0, gate_scale)
        model.prior_gate.weight.normal_(0.0, gate_scale)
    sub = _history([(0, [0, 1], [1.0, 0.0]), (1, [0, 2], [0.0, 1.0]), (2, [1, 2, 3], [0.5, 1.0, 0.0]),
                    (3, [3, 4], [np.nan, np.nan])])
    cat = _catalog()
    req = Request(0, QUERIES[0], np.stack([cat[m] for m in LLMS]), list(LLMS))
    with torch.no_grad():
        b = build_batch([sub], [req], cat, emb_dim=D)
        s = model(b).numpy()
        total, per = pushes(model, b)
        personal = s - _global(model, b)
    np.testing.assert_allclose(total, personal, atol=1e-4)
    kept: dict = {}
    with torch.no_grad():
        s_kept = model(b, keep=kept)
    terms = {k: v.numpy() for k, v in kept["terms"].items()}
    assert list(terms)[:2] == ["head", "posterior"] and ("levels" in terms) == bool(levels)
    np.testing.assert_array_equal(s_kept.numpy(), s)
    np.testing.assert_allclose(sum(terms.values()), s, atol=1e-5)  # the parts are the whole score
    with torch.no_grad():
        np.testing.assert_allclose(terms["head"], _global(model, b), atol=1e-6)
    own = sum(v for k, v in terms.items() if k not in ("head", "crowd"))
    np.testing.assert_allclose(own, total, atol=1e-4)  # the user's own terms are the pushes' total
    assert all(abs(v) > 0 for v in total[:4])  # every rated LLM was pushed
    (e,) = explain(model, b, sub.turn_ids, [int(np.argmax(s))])
    assert len(e["personal"]) == len(LLMS)
    named = {p["turn_id"] for p in e["pushed_by"]}
    assert named and named <= set(sub.turn_ids[:7])  # only rated turns push
