"""The user's consistency, read from the comparisons that involve none of the request's candidates."""

from __future__ import annotations

import numpy as np
import torch

from trainer.consistency import consistency_features
from trainer.graph import Request, build_batch
from trainer.model import GMTRouter, GMTRouterConfig
from tests.trainer.test_monotone import LLMS, QUERIES, D, _catalog, _history

# m2 beats m3 and m4 beats m3, again and again: a steady user (m0 and m1 are the request's candidates)
STEADY = [(k % 12, [2, 3], [1.0, 0.0]) if k % 2 else (k % 12, [4, 3], [1.0, 0.0]) for k in range(12)]


def _features(hist, cands=(0, 1)) -> np.ndarray:
    cat = _catalog()
    req = Request(0, QUERIES[0], np.stack([cat[LLMS[m]] for m in cands]), [LLMS[m] for m in cands])
    return build_batch([_history(hist)], [req], cat, emb_dim=D).consistency.numpy()[0]


def _flip(group):
    q, ms, rs = group
    return q, ms, rs[::-1]


def test_a_steady_user_agrees_with_themself_and_a_noisy_one_does_not():
    steady = _features(STEADY)
    # 12 kept pairs, every one predicted by the others: (12 + 1) / (12 + 2) agreement
    np.testing.assert_allclose(steady[:2], [np.log1p(12) / 4, 8 * (13 / 14 - 0.5)], atol=1e-6)
    assert steady[2] > 0  # predicted from the earlier ones, all but the first of each pair of LLMs
    noisy = _features([_flip(g) if k % 3 == 0 else g for k, g in enumerate(STEADY)])
    assert noisy[1] < steady[1] and noisy[2] < steady[2]


def test_a_drifting_user_is_predicted_worse_from_the_past():
    drift = _features(STEADY + [_flip(g) for g in STEADY])  # the taste turns over halfway
    assert drift[1] < 0  # each half outvotes the other
    assert drift[2] > drift[1]  # the past predicts the first half well


def test_comparisons_of_the_candidates_are_not_read():
    """Ratings of any comparison that involves a candidate leave the features as they are: that is what keeps
    the evidence weights they shift from reading the comparison being judged."""
    base = _features(STEADY)
    with_candidates = STEADY + [(0, [0, 1], [1.0, 0.0]), (1, [0, 3], [0.0, 1.0]), (2, [2, 1, 3], [1.0, 0.5, 0.0])]
    a = _features(with_candidates)
    b = _features([_flip(g) if 0 in g[1] or 1 in g[1] else g for g in with_candidates])
    np.testing.assert_allclose(a, base)
    np.testing.assert_allclose(b, base)
    # the same comparisons do count for a request whose candidates they do not involve
    assert not np.allclose(_features(with_candidates, cands=(4,)), _features(STEADY, cands=(4,)))


def test_nothing_to_read_gives_zeros():
    np.testing.assert_allclose(_features([]), 0.0)
    np.testing.assert_allclose(_features([(0, [0, 2], [1.0, 0.0])]), 0.0)  # involves a candidate
    np.testing.assert_allclose(_features([(0, [2, 3], [0.5, 0.5])]), 0.0)  # a tie is no pair


def test_features_are_per_request_and_per_user():
    cat = _catalog()
    subs = [_history(STEADY), _history([_flip(g) if k % 4 == 1 else g for k, g in enumerate(STEADY)])]
    reqs = [Request(u, QUERIES[0], np.stack([cat[LLMS[a]], cat[LLMS[b]]]), [LLMS[a], LLMS[b]])
            for u, (a, b) in [(0, (0, 1)), (0, (2, 3)), (1, (0, 1))]]
    f = build_batch(subs, reqs, cat, emb_dim=D).consistency.numpy()
    np.testing.assert_allclose(f[0], _features(STEADY))
    np.testing.assert_allclose(f[1], _features(STEADY, cands=(2, 3)))
    assert f[1, 0] < f[0, 0]  # fewer comparisons are free of m2 and m3
    assert f[2, 1] < f[0, 1]  # the second user contradicts themself
    np.testing.assert_allclose(consistency_features(np.zeros(0, np.int64), np.zeros(0, np.int64), [],
                                                    np.zeros(0, np.int64), [], np.zeros(0, np.int64),
                                                    np.zeros(0, np.float32), np.zeros((2, 0), np.int64)),
                               np.zeros((0, 3)))


def test_the_consistency_gate_moves_the_weights_only_when_configured():
    torch.manual_seed(0)
    on = GMTRouter(GMTRouterConfig(emb_dim=D, hidden=16, topics=4, pref_dim=6, heads=2, consistency=True)).eval()
    off = GMTRouter(GMTRouterConfig(emb_dim=D, hidden=16, topics=4, pref_dim=6, heads=2)).eval()
    assert off.consistency_gate is None
    with torch.no_grad():
        on.consistency_gate.weight.normal_(0.0, 0.5)
    cat = _catalog()
    req = Request(0, QUERIES[0], np.stack([cat[LLMS[0]], cat[LLMS[1]]]), LLMS[:2])
    noisy = [_flip(g) if k % 4 == 1 else g for k, g in enumerate(STEADY)]

    def gates(model, hist):
        b = build_batch([_history(hist)], [req], cat, emb_dim=D)
        with torch.no_grad():
            return model.gates(b, torch.zeros(1, 16)).numpy()

    assert not np.allclose(gates(on, STEADY), gates(on, noisy))
    np.testing.assert_allclose(gates(off, STEADY), gates(off, noisy))
