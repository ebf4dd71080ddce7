"""Level offsets for LLMs the serving model never learned (trainer/calibration.py): the fit, its sign, the file,
and a router's scorer that adds them and shows them in the audit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphstore.schema import HeldOutGroup, LLMInfo, UserSubgraph
from trainer.calibration import (apply_offsets, calibrate, fit_offsets, load_offsets, read_offsets,
                                 save_offsets)


def _group(a: str, b: str, a_won: bool) -> HeldOutGroup:
    return HeldOutGroup("u", "q", np.zeros(2, np.float32), [a, b], np.array([1.0, 0.0] if a_won else [0.0, 1.0],
                                                                          np.float32), 0)


def _planted(rng, n: int, true_b: float) -> tuple[list, list]:
    """``n`` comparisons of "x" with other LLMs whose model margins are random and whose outcomes follow the margin
    plus ``true_b`` for x."""
    groups, scores = [], []
    for _ in range(n):
        s = rng.normal(0, 1.5, size=2)
        x_wins = rng.random() < 1 / (1 + np.exp(-(s[0] - s[1] + true_b)))
        groups.append(_group("x", rng.choice(["a", "b", "c"]), x_wins))
        scores.append(s)
    return groups, scores


def test_the_fit_recovers_a_planted_level_error():
    rng = np.random.default_rng(0)
    groups, scores = _planted(rng, 4000, -0.8)
    b = fit_offsets(groups, scores, {"x"})
    assert set(b) == {"x"} and abs(b["x"] + 0.8) < 0.15
    assert fit_offsets(groups[:0], scores[:0], {"x"}) == {"x": 0.0}  # no pair: no offset
    assert abs(fit_offsets(groups[:3], scores[:3], {"x"})["x"]) < 1.0  # few pairs: the prior holds it near 0


def test_a_win_raises_the_winners_offset_and_lowers_the_losers():
    rng = np.random.default_rng(1)
    groups, scores = _planted(rng, 200, 0.3)
    base = fit_offsets(groups, scores, {"x", "a"})
    more = fit_offsets(groups + [_group("x", "b", True)], scores + [np.array([0.4, -0.2])], {"x", "a"})
    assert more["x"] > base["x"]
    lost = fit_offsets(groups + [_group("b", "a", True)], scores + [np.array([0.1, 0.0])], {"x", "a"})
    assert lost["a"] < base["a"]
    both = fit_offsets(groups + [_group("x", "a", True)], scores + [np.array([0.0, 0.0])], {"x", "a"})
    assert both["x"] - both["a"] > base["x"] - base["a"]


def test_offsets_are_kept_for_the_version_they_were_fitted_to(tmp_path):
    assert load_offsets(tmp_path, "v1") == {}
    save_offsets(tmp_path, "v1", {"x": -0.5}, fresh_pairs=12)
    assert load_offsets(tmp_path, "v1") == {"x": -0.5} and load_offsets(tmp_path, "v2") == {}
    np.testing.assert_allclose(apply_offsets(np.array([1.0, 2.0]), ["x", "a"], {"x": -0.5}), [0.5, 2.0])


def test_calibrate_chooses_what_serves_the_fresh_pairs_best():
    """Fitted on the earlier comparisons; on the later ones the fit, the offsets in force and none compete."""
    rng = np.random.default_rng(2)
    groups, scores = _planted(rng, 1200, -1.2)
    out = calibrate(groups[:900], scores[:900], groups[900:], scores[900:], {"x"})
    assert out["fresh_pairs"] == 300 and out["chosen"] == "fit"
    assert out["fresh_scores"]["fit"] > out["fresh_scores"]["none"]
    assert out["fitted_before_cutoff"]["x"] < -0.8
    assert abs(out["offsets"]["x"] - fit_offsets(groups, scores, {"x"})["x"]) < 1e-9  # refitted on both sides
    # a fit that points the wrong way loses to the offsets in force, which stay
    wrong = [_group(g.llm_ids[0], g.llm_ids[1], not bool(g.ratings[0] > g.ratings[1])) for g in groups[:900]]
    out = calibrate(wrong, scores[:900], groups[900:], scores[900:], {"x"}, current={"x": -1.2})
    assert out["fitted_before_cutoff"]["x"] > 0.8 and out["chosen"] == "in force" and out["offsets"] == {"x": -1.2}
    # ...and both lose to none when the fresh pairs say so
    out = calibrate(wrong, scores[:900], groups[900:], scores[900:], {"x"}, current={"x": 3.0})
    assert out["chosen"] == "none" and out["offsets"] == {}
    assert out["fresh_scores"]["none"] > max(out["fresh_scores"]["fit"], out["fresh_scores"]["in force"])
    # no fresh pair with x (the last group compares others): nothing to choose on, the offsets in force stay
    out = calibrate(groups[:900], scores[:900], [_group("a", "b", True)], [np.zeros(2)], {"x"}, current={"x": 3.0})
    assert out["fresh_pairs"] == 0 and out["chosen"] == "in force" and out["offsets"] == {"x": 3.0}


def test_fresh_pairs_are_scored_by_accuracy_or_by_likelihood():
    from trainer.calibration import fresh_score

    groups = [_group("x", "a", True), _group("x", "b", False), _group("a", "b", True)]  # the last has no x
    scores = [np.array([0.5, 0.0]), np.array([0.2, 0.0]), np.array([-3.0, 0.0])]
    assert fresh_score(groups, scores, {"x"}, {}, "accuracy") == 1.0  # x's win is right, its loss wrong
    assert fresh_score(groups, scores, {"x"}, {"x": -0.5}, "accuracy") == 1.5  # now 0 vs 0 on the first: half
    ll = lambda m: -np.log1p(np.exp(-m))  # noqa: E731
    assert abs(fresh_score(groups, scores, {"x"}, {}, "likelihood") - (ll(0.5) + ll(-0.2))) < 1e-12
    assert abs(fresh_score(groups, scores, {"x"}, {"x": -0.3}, "likelihood") - (ll(0.2) + ll(0.1))) < 1e-12
    with pytest.raises(ValueError, match="criterion"):
        fresh_score(groups, scores, {"x"}, {}, "auc")


def test_a_fit_on_older_feedback_does_not_replace_a_newer_one(tmp_path):
    """A cycle that sampled before a recount's fit does not undo it; another version's file is replaced."""
    assert save_offsets(tmp_path, "v1", {"x": -0.5}, until_ms=2000, games=80.0, source="recount")
    assert not save_offsets(tmp_path, "v1", {"x": 0.3}, until_ms=1000, source="cycle")
    assert load_offsets(tmp_path, "v1") == {"x": -0.5} and read_offsets(tmp_path)["games"] == 80.0
    assert save_offsets(tmp_path, "v1", {"x": -0.7}, until_ms=2000)  # as recent: replaced
    assert save_offsets(tmp_path, "v2", {"x": 0.3}, until_ms=1000)
    assert load_offsets(tmp_path, "v2") == {"x": 0.3} and load_offsets(tmp_path, "v1") == {}


@pytest.fixture()
def served(tmp_path):
    """A router's ModelSource serving a small promoted model."""
    from trainer.model import GMTRouter, GMTRouterConfig
    from trainer.registry import ModelRegistry
    from workers.models import ModelSource

    torch.manual_seed(0)
    reg = ModelRegistry(tmp_path)
    version = reg.publish(GMTRouter(GMTRouterConfig(emb_dim=16, hidden=8, topics=4, pref_dim=4)).eval(), promote=True)
    return ModelSource(tmp_path), version


def test_a_router_adds_the_offsets_of_its_version_and_the_audit_shows_them(served, tmp_path):
    source, version = served
    rng = np.random.default_rng(2)
    cands = [LLMInfo(m, f"{m} model", 1.0, 1.0, rng.normal(size=16).astype(np.float32)) for m in ("x", "a", "b")]
    item = (UserSubgraph("nobody"), rng.normal(size=16).astype(np.float32), cands)
    before = source.scorer.score_batch([item])[0]
    assert not source.refresh()  # no offsets file: nothing changes
    save_offsets(tmp_path, version, {"x": -2.0})
    assert source.refresh() and source.scorer.offsets == {"x": -2.0}
    scores, why = source.scorer.decide_batch([item])
    np.testing.assert_allclose(scores[0], before + np.array([-2.0, 0.0, 0.0]), rtol=1e-5, atol=1e-5)
    assert why[0]["offsets"] == {"x": -2.0}
    save_offsets(tmp_path, "another-version", {"x": 5.0})  # fitted to another model: not applied
    assert source.refresh() and source.scorer.offsets == {}


def test_the_audit_prints_the_offsets():
    import io

    from rich.console import Console

    from graphstore.cli import print_explanation

    buf = io.StringIO()
    print_explanation({"offsets": {"x": -0.75}}, "a", Console(file=buf, width=200))
    assert "level offsets" in buf.getvalue() and "x -0.750" in buf.getvalue()


def test_concurrent_writers_keep_the_fit_on_the_latest_feedback(tmp_path, race):
    """The trainer's recounts and its cycle tasks write the offsets at once: each writes only when the file holds
    no later fit, and that check and the write are one step under the registry's lock. Eight writers released
    together, 100 times over: the file always ends with the fit on the latest feedback (without the lock an older
    fit, checked before the newer one landed, overwrites it)."""
    for trial in range(100):
        root = tmp_path / f"t{trial}"
        save_offsets(root, "v1", {"x": 0.0}, until_ms=0)
        race(*(lambda i=i, root=root: save_offsets(root, "v1", {"x": float(i)}, until_ms=i) for i in range(1, 9)))
        assert read_offsets(root)["until_ms"] == 8 and load_offsets(root, "v1") == {"x": 8.0}, trial
        assert not list(root.glob(".*.tmp"))  # every temp file was renamed into place
