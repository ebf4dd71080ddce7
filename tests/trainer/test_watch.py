"""The live watch's sequential test (trainer/watch.py): its evidence by hand, its error rate under repeated looks,
its power, and the running tally."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binomtest

from trainer.watch import WatchState, log_evidence, read_watch, save_watch


def test_the_evidence_is_the_mixed_likelihood_ratio_by_hand():
    assert abs(log_evidence(0, 0)) < 1e-12  # no discordant pair: M = 1
    # L = 2, W = 0, width 1/2: 2 * integral_{1/2}^1 4 q^2 dq = 8 * (7/8) / 3
    assert math.isclose(log_evidence(2, 0, (0.5,)), math.log(7 / 3), rel_tol=1e-12)
    # L = 1, W = 1, width 1/2: 2 * integral_{1/2}^1 4 q (1 - q) dq = 8 * (1/12)
    assert math.isclose(log_evidence(1, 1, (0.5,)), math.log(8 / 12), rel_tol=1e-12)
    # width 1/10: 10 * integral_{1/2}^{6/10} 4 q^2 dq = 40 * (0.216 - 0.125) / 3; the mixture averages the two
    assert math.isclose(log_evidence(2, 0, (0.1,)), math.log(40 * 0.091 / 3), rel_tol=1e-9)
    assert math.isclose(log_evidence(2, 0, (0.1, 0.5)), math.log((40 * 0.091 / 3 + 7 / 3) / 2), rel_tol=1e-9)
    assert log_evidence(30, 10) > log_evidence(20, 10) > log_evidence(20, 20)  # losses raise it, wins lower it
    assert np.isfinite(log_evidence(5000, 4000)) and log_evidence(10, 5000) < -100


def _crossed(q: float, runs: int, flips: int, every: int, seed: int = 0) -> np.ndarray:
    """[runs] whether the evidence reached 20 (alpha 0.05) at some look, every ``every`` discordant pairs that go
    to counting with chance ``q``."""
    rng = np.random.default_rng(seed)
    losses = np.cumsum(rng.random((runs, flips)) < q, axis=1)[:, every - 1::every]
    n = np.arange(every, flips + 1, every)
    table = {}
    out = np.zeros(runs, bool)
    for j, m in enumerate(n):
        for r in range(runs):
            key = (int(losses[r, j]), int(m - losses[r, j]))
            if key not in table:
                table[key] = log_evidence(*key)
            out[r] |= table[key] >= math.log(20)
    return out


def test_looking_at_every_recount_keeps_the_false_demotions_under_alpha():
    """A model level with counting (q = 1/2), looked at every 10 discordant pairs for 2,000: the watch demotes it
    in fewer than alpha of the runs, where a fixed-sample sign test at alpha repeated at every look does not."""
    crossed = _crossed(0.5, 400, 2000, 10)
    assert crossed.mean() < 0.05
    rng = np.random.default_rng(0)
    losses = np.cumsum(rng.random((100, 2000)) < 0.5, axis=1)[:, 9::10]
    naive = [any(binomtest(int(k), int(n), 0.5, alternative="greater").pvalue < 0.05
                 for k, n in zip(row, range(10, 2001, 10))) for row in losses]
    assert np.mean(naive) > 0.1


def test_a_model_behind_counting_is_demoted():
    """Counting wins 60 % of the discordant pairs: demoted within 1,000 of them in nearly every run; one that wins
    45 % never."""
    assert _crossed(0.6, 200, 1000, 10, seed=1).mean() > 0.9
    assert not _crossed(0.45, 200, 1000, 10, seed=2).any()


def test_the_tally_counts_per_user_and_demotes_at_one_over_alpha(tmp_path):
    state = WatchState("v1", marks={"a": 100, "b": 150})
    # a: a turn after its mark; b: none; c: no mark, counts from the window's start (120)
    assert state.due([("a", 180), ("b", 150), ("c", 130)], since_ms=120) == {"a": (100, 180), "c": (120, 130)}
    state.add(np.array([1.0, 0.0, 0.5, 1.0]), np.array([0.0, 1.0, 1.0, 1.0]), read={"a": 180, "c": 130})
    assert (state.pairs, state.wins, state.losses, state.checks) == (4, 1, 2, 1)
    assert state.marks == {"a": 180, "b": 150, "c": 130} and state.due([("a", 180), ("c", 130)], 120) == {}
    assert state.right == {"serving": 2.5, "count": 3.0} and state.accuracy() == {"serving": 0.625, "count": 0.75}
    assert not state.verdict(0.05) and not state.demoted and "4 pairs" in state.reason
    state.add(np.zeros(40), np.ones(40), read={})
    assert math.isclose(state.log_evidence, log_evidence(42, 1))
    assert state.verdict(0.05) and state.demoted and "demoted" in state.reason
    state.forget_before(140)
    assert state.marks == {"a": 180, "b": 150}
    save_watch(tmp_path, state)
    assert read_watch(tmp_path) == state
    assert read_watch(tmp_path / "nothing") is None


def test_train_history_shows_the_watch(tmp_path, capsys):
    from prefstream.config import Settings
    from trainer.refresh_cli import print_history

    state = WatchState("v7")
    state.add(np.ones(5), np.zeros(5), read={"u": 20})
    state.verdict(0.05)
    save_watch(tmp_path, state)
    print_history(Settings(model_dir=tmp_path), as_json=False)
    out = capsys.readouterr().out
    assert "live watch of v7" in out and "5 pairs since it began serving" in out


def test_the_watch_is_exported_to_prometheus():
    from prometheus_client import REGISTRY

    from trainer.refresh_cli import export_watch

    state = WatchState("v7")
    state.add(np.array([1.0, 1.0, 0.0, 0.5]), np.array([0.0, 1.0, 1.0, 1.0]), read={})
    export_watch(state.to_dict())
    value = lambda q: REGISTRY.get_sample_value("prefstream_trainer_watch", {"quantity": q})  # noqa: E731
    assert value("pairs") == 4 and value("serving_accuracy") == 0.625 and value("count_accuracy") == 0.75
    assert value("log_evidence") == state.log_evidence


def test_train_history_shows_each_cycles_check_of_the_kept_counts(tmp_path, capsys, monkeypatch):
    """`prefstream train --history`: "rebuilt/checked" users per cycle, "failed" for a check that failed, "-" for
    a cycle that did not check (off, or logged before cycles checked)."""
    import json
    from dataclasses import asdict

    from prefstream.config import Settings
    from trainer.refresh import CYCLES_FILE, CycleRecord
    from trainer.refresh_cli import print_history

    windows = [{"counts": {"users": 512, "answers": 9000, "differed": 4, "rebuilt": 3, "rebuilt_ids": ["a", "b", "c"],
                           "still_off": []}}, {"counts": {"users": 40, "error": "timed out"}}, {"counts": {}}, {}]
    with open(tmp_path / CYCLES_FILE, "w") as f:
        for i, w in enumerate(windows):
            f.write(json.dumps(asdict(CycleRecord(1.7e9 + i, None, None, False, "", w))) + "\n")
    monkeypatch.setenv("COLUMNS", "240")  # one line per cycle
    print_history(Settings(model_dir=tmp_path), as_json=False)
    rows = [line.split("│") for line in capsys.readouterr().out.splitlines() if "2023-11-14" in line]
    assert [r[-3].strip() for r in rows] == ["3/512", "failed", "-", "-"]  # the column before the seconds
