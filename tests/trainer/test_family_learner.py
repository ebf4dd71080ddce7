"""bench/family_learner.py's reference learners: the weighted Bradley-Terry MAP and the exact-likelihood fit
of thumbs and scores must recover a taste they are shown, or the bound they give on what a learner can do is
meaningless."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    """A bench script as a module (each puts the repository root on sys.path itself)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _comparisons(rng, taste: np.ndarray, n: int, noise: float):
    """n random comparisons of a per-LLM taste (one-hot features): winner - loser rows."""
    rows = []
    for _ in range(n):
        a, b = rng.choice(len(taste), 2, replace=False)
        ua, ub = taste[a] + noise * rng.logistic(), taste[b] + noise * rng.logistic()
        win, lose = (a, b) if ua > ub else (b, a)
        rows.append(np.eye(len(taste))[win] - np.eye(len(taste))[lose])
    return np.array(rows)


def test_weighted_map_equals_repeating_a_comparison_and_recovers_the_taste():
    qc = _load("quality_ceiling")
    rng = np.random.default_rng(0)
    taste = np.array([1.5, 0.5, -0.5, -1.5])
    x = _comparisons(rng, taste, 300, 0.3)
    mu, sd = np.zeros(4), np.ones(4)
    doubled = qc.map_fit(np.concatenate([x, x[:50]]), np.zeros(350), mu, sd, mu.copy())
    weighted = qc.map_fit(x, np.zeros(300), mu, sd, mu.copy(), weights=np.r_[np.full(50, 2.0), np.ones(250)])
    np.testing.assert_allclose(weighted, doubled, atol=1e-5)
    assert list(np.argsort(-weighted)) == [0, 1, 2, 3]
    down = qc.map_fit(x, np.zeros(300), mu, sd, mu.copy(), weights=np.full(300, 0.01))
    assert np.abs(down).sum() < np.abs(weighted).sum()  # less evidence: closer to the prior


def test_levels_fit_reads_thumbs_and_scores_by_their_likelihood():
    fl = _load("family_learner")
    rng = np.random.default_rng(1)
    n_m, noise, leniency = 4, 0.5, 0.8
    taste = np.array([1.0, 0.3, -0.3, -1.0])
    f = np.column_stack([np.zeros(n_m), np.eye(n_m)])  # [M, 1 + M]: no correctness, one indicator per LLM
    mu = np.concatenate([[0.0], np.zeros(n_m), [leniency]])
    sd = np.concatenate([[1.0], np.ones(n_m), [0.4]])
    for kind in ("thumbs", "score"):
        obs = fl.Observations(kind)
        for _ in range(150):
            llms = [int(m) for m in rng.choice(n_m, 2, replace=False)]
            x = taste[llms] + noise * rng.logistic(size=2)
            ratings = [float(v > leniency) for v in x]
            scores = [float(np.clip(round(1 + 9 / (1 + math.exp(-(v - leniency)))), 1, 10)) for v in x]
            if kind == "score":
                ratings = [(s - 1) / 9 for s in scores]
            obs.add(SimpleNamespace(llm_idx=llms, ratings=ratings, scores=scores), f)
        w = fl.levels_fit(obs, mu, sd, mu.copy(), noise)
        assert list(np.argsort(-w[1:-1])) == [0, 1, 2, 3], kind
        assert abs(w[-1] - leniency) < 0.5, kind
