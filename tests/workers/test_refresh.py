"""The periodic trainer's cycle on a real graph: trains, promotes, refuses a worse model, logs every cycle."""

from __future__ import annotations

import copy

import pytest

from trainer.refresh import RefreshConfig, RefreshTrainer, split_prequential

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_prequential_split_never_trains_on_what_it_evaluates(sim_store):
    samples = sim_store.sample_training(200, 10, seed=1)
    cutoff = sorted(g.timestamp for s in samples for g in s.targets)[len(samples)]
    train, evals = split_prequential(samples, cutoff)
    assert train and evals
    assert all(g.timestamp < cutoff for s in train for g in s.targets)
    assert all(g.timestamp >= cutoff for s in evals for g in s.targets)
    for s in train + evals:  # every visible turn precedes every target of its sample
        assert max(s.visible.timestamps, default=-1) < min(g.timestamp for g in s.targets)


def test_cycle_promotes_a_trained_model_and_refuses_a_worse_one(sim_store, module_settings):
    from trainer.checkpoint import load_checkpoint
    from workers.models import ModelSource

    trainer = RefreshTrainer(sim_store, module_settings.model_dir, RefreshConfig(window_minutes=1e9, users=100, steps=30))
    first = trainer.run_cycle()
    assert first.promoted and first.serving_version is None
    assert first.window["train_targets"] > 0 and first.window["eval_targets"] > 0
    assert first.candidate_metrics["auc"] > 0.5
    assert trainer.registry.current() == first.candidate_version

    source = ModelSource(module_settings.model_dir)  # what a router worker loads
    assert source.scorer.version == first.candidate_version

    model = load_checkpoint(trainer.registry.path(first.candidate_version)).model
    worse = copy.deepcopy(model)
    forward = worse.forward
    worse.forward = lambda batch: -forward(batch)  # deliberately worse: every preference reversed
    second = trainer.run_cycle(candidate=worse)
    assert not second.promoted
    assert second.candidate_metrics["auc"] < second.serving_metrics["auc"]
    assert trainer.registry.current() == first.candidate_version  # still serving the good one
    assert not source.refresh() and source.scorer.version == first.candidate_version

    third = trainer.run_cycle()  # warm start from the serving model on the same feedback: not worse
    assert third.serving_version == first.candidate_version
    if third.promoted:
        assert source.refresh() and source.scorer.version == third.candidate_version

    history = trainer.history()
    assert [h["promoted"] for h in history] == [True, False, third.promoted]
    assert [h["candidate_version"] for h in history] == [first.candidate_version, second.candidate_version,
                                                          third.candidate_version]
