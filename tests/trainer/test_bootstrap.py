"""The user-clustered bootstrap behind bench/quality_ci.py: right point estimate, intervals that cover a
real lead and straddle no lead, and wider when pairs cluster in few users."""

from __future__ import annotations

import numpy as np

from trainer.metrics import pair_correct, user_bootstrap


def test_pair_correct_matches_the_accuracy_definition():
    got = pair_correct(np.array([1.0, -2.0, 0.0, 0.5]), np.array([1, 1, 0, 0]))
    assert got.tolist() == [1.0, 0.0, 0.5, 0.0]


def test_a_real_lead_is_inside_a_positive_interval():
    rng = np.random.default_rng(0)
    users = np.repeat([f"u{i}" for i in range(200)], 20)
    a = (rng.random(users.size) < 0.75).astype(float)
    b = (rng.random(users.size) < 0.65).astype(float)
    r = user_bootstrap(a, b, users, n_boot=500)
    assert r["diff"] == (a - b).mean()
    assert 0 < r["low"] < r["diff"] < r["high"]
    assert r["p_above_0"] > 0.99 and r["users"] == 200 and r["pairs"] == users.size


def test_no_lead_gives_an_interval_around_zero():
    rng = np.random.default_rng(1)
    users = np.repeat([f"u{i}" for i in range(100)], 10)
    a = (rng.random(users.size) < 0.7).astype(float)
    r = user_bootstrap(a, a[::-1].copy(), users, n_boot=500)
    assert r["low"] < 0 < r["high"]


def test_clustered_pairs_give_a_wider_interval_than_independent_ones():
    """Each user either always wins or always loses: 10 users carry the evidence, not 1,000 pairs."""
    users = np.repeat([f"u{i}" for i in range(10)], 100)
    a = np.repeat(np.arange(10) % 2, 100).astype(float)
    b = np.zeros_like(a)
    clustered = user_bootstrap(a, b, users, n_boot=500)
    independent = user_bootstrap(a, b, [f"p{i}" for i in range(a.size)], n_boot=500)
    assert clustered["high"] - clustered["low"] > 3 * (independent["high"] - independent["low"])
