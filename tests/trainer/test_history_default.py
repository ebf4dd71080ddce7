"""Serve what you evaluate (issue 23): `prefstream eval` measures the history a serving router reads."""

from __future__ import annotations

import argparse

from prefstream.config import Settings
from trainer import cli


def test_eval_default_history_is_the_serving_history():
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "--train", "a", "--test", "b"])
    assert cli._history(args) == Settings().history_turns
    args = parser.parse_args(["fit", "--train", "a"])
    assert cli._history(args) == Settings().history_turns


def test_the_trainer_samples_the_serving_history():
    from trainer.refresh_cli import refresh_config

    assert refresh_config(Settings()).k == Settings().history_turns


def test_the_benchmark_model_trains_on_at_least_the_serving_history():
    from trainer.config import TrainConfig

    assert TrainConfig().k_min <= Settings().history_turns <= TrainConfig().k_max


def test_the_serving_history_is_what_the_history_benchmark_chose():
    import json
    from pathlib import Path

    result = Path(__file__).resolve().parents[2] / "bench" / "results" / "history.json"
    assert Settings().history_turns == json.loads(result.read_text())["chosen_by_rule"]
