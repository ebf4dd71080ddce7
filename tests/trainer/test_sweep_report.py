"""bench/sweep.py's report: comparisons are recomputed from per-pair files where they exist and kept as
recorded where this checkout lacks them (a rerun that adds one variant must not erase the others' intervals)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _sweep():
    spec = importlib.util.spec_from_file_location("bench_sweep", ROOT / "bench" / "sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _result(acc: float) -> dict:
    return {"accuracy": acc, "auc": acc, "best_step": 10, "train_seconds": 1.0}


def test_write_keeps_recorded_comparisons_and_recomputes_those_it_can(tmp_path):
    sweep = _sweep()
    recorded = {"diff": 0.5, "low": 0.4, "high": 0.6, "p_above_0": 1.0, "users": 2, "pairs": 4}
    out = {"commands": ["python bench/sweep.py"], "jobs": 2, "n_boot": 50, "load_avg_start": (0.1, 0.1, 0.1),
           "variants": ["defaults", "seed=1", "layers=1"], "notes": [],
           "results": {k: {n: _result(0.7) for n in ("defaults", "seed=1", "layers=1")} for k in sweep.KINDS},
           "vs_defaults": {k: {"seed=1": recorded, "layers=1": recorded} for k in sweep.KINDS}}
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    users = np.array(["a", "a", "b", "b"])
    for kind in sweep.KINDS:  # only layers=1 has per-pair files next to the defaults' here
        np.savez_compressed(pairs / f"{kind}__defaults.npz", correct=np.array([1, 0, 1, 0.0]), users=users)
        np.savez_compressed(pairs / f"{kind}__layers=1.npz", correct=np.array([1, 1, 1, 0.0]), users=users)
    path = tmp_path / "sweep.json"
    sweep.write(out, path, pairs)
    saved = json.loads(path.read_text())
    for kind in sweep.KINDS:
        assert saved["vs_defaults"][kind]["seed=1"] == recorded  # no files here: as recorded
        assert saved["vs_defaults"][kind]["layers=1"]["diff"] == 0.25  # recomputed: one pair of four flipped
    md = path.with_suffix(".md").read_text()
    assert "(+50.00 [+40.00, +60.00])" in md and "(+25.00" in md


def test_a_redone_run_forgets_its_recorded_interval_and_redone_defaults_forget_all():
    sweep = _sweep()
    recorded = {"default": {"seed=1": {"diff": 0.1}, "layers=1": {"diff": 0.2}},
                "families": {"seed=1": {"diff": 0.3}, "layers=1": {"diff": 0.4}}}
    sweep.drop_stale(recorded, [("default", "seed=1"), ("families", "defaults")])
    assert recorded == {"default": {"layers=1": {"diff": 0.2}}, "families": {}}
