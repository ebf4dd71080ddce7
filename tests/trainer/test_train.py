import dataclasses

import numpy as np
import pytest
import torch

from trainer.data import cold_start_samples, online_samples, training_samples
from trainer.metrics import pair_metrics
from trainer.model import GMTRouter, GMTRouterConfig
from trainer.train import TrainConfig, ema_update, evaluate, fit, lr_factor, score_samples

D = 32


def _cfg(steps: int = 50) -> TrainConfig:
    return TrainConfig(model=GMTRouterConfig(emb_dim=D, hidden=32), steps=steps, batch_size=24, eval_every=25,
                       max_valid=300, k_max=20, seed=0)


@pytest.fixture(scope="module")
def trained(tiny_ds):
    tr = training_samples(tiny_ds, "train", window=20)
    va = online_samples(tiny_ds, "valid", history=20)
    return fit(tr, va, _cfg(), progress=False, llms=tiny_ds.llms)


def test_few_steps_beat_random_on_held_out_pairs(trained, tiny_ds):
    te = online_samples(tiny_ds, "test", history=20)
    m = evaluate(trained.model, te)
    rng = np.random.default_rng(0)
    rand = pair_metrics([g for s in te for g in s.targets], [rng.random(len(g.llm_ids)) for s in te for g in s.targets])
    assert m["pairs"] > 150
    assert m["accuracy"] > rand["accuracy"] + 0.05
    assert m["auc"] > 0.6
    assert trained.best_step in {h["step"] for h in trained.history}
    assert trained.metrics["auc"] == max(h["auc"] for h in trained.history)  # chosen on validation AUC


def test_visible_history_strictly_precedes_targets(tiny_ds):
    for samples in (training_samples(tiny_ds, "train", window=20), online_samples(tiny_ds, "test", history=20),
                    cold_start_samples(tiny_ds, tiny_ds.users("test"), 5)):
        for s in samples:
            if len(s.visible):
                assert s.visible.timestamps.max() < min(g.timestamp for g in s.targets)


def _user_scores(model, ds, user):
    samples = online_samples(ds, "test", history=20, users={user})
    keys = [(g.conversation_id, g.turn) for s in samples for g in s.targets]
    return dict(zip(keys, score_samples(model, samples, model.llm_emb)))


def test_test_feedback_cannot_leak_into_predictions(trained, tiny_ds):
    """A test prediction reads only feedback from before it, its own user's (history) and others' (crowd):
    perturbing every rating from its time on, its own label and everybody's later ones, must not change it."""
    rng = np.random.default_rng(1)
    targets = [g for g in tiny_ds.groups if g.split == "test" and g.has_pairs]
    for i in rng.choice(len(targets), 12, replace=False):
        t = targets[i]
        groups2 = [dataclasses.replace(g, ratings=rng.random(len(g.ratings)).astype(np.float32))
                   if g.timestamp >= t.timestamp else g for g in tiny_ds.groups]
        ds2 = type(tiny_ds)(groups2, tiny_ds.query_emb, tiny_ds.query_row, tiny_ds.llms)
        key = (t.conversation_id, t.turn)
        np.testing.assert_allclose(_user_scores(trained.model, tiny_ds, t.user_id)[key],
                                   _user_scores(trained.model, ds2, t.user_id)[key], rtol=1e-5, atol=1e-6)
    a = score_samples(trained.model, online_samples(tiny_ds, "test", history=20), trained.model.llm_emb)
    # sanity: the perturbation is visible to a sample that *follows* a perturbed group
    ds3_groups = [dataclasses.replace(g, ratings=1.0 - g.ratings) if g.split == "valid" else g for g in tiny_ds.groups]
    ds3 = type(tiny_ds)(ds3_groups, tiny_ds.query_emb, tiny_ds.query_row, tiny_ds.llms)
    c = score_samples(trained.model, online_samples(ds3, "test", history=20), trained.model.llm_emb)
    assert any(not np.allclose(x, y) for x, y in zip(a, c))


def test_training_is_seeded(tiny_ds):
    """The same seed gives the same weights to the bit, with 2 threads as `prefstream eval` trains (CPU kernels
    that split a sum over threads add in a varying order unless fit asks torch for its deterministic ones)."""
    tr = training_samples(tiny_ds, "train", turns=40)
    va = online_samples(tiny_ds, "valid", history=10)[:60]
    # batches big enough that torch splits the backward of the gathers over the threads
    cfg = dataclasses.replace(_cfg(steps=4), model=GMTRouterConfig(emb_dim=D, hidden=64), batch_size=64,
                              eval_every=2, k_max=40)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        r1, r2, r3 = (fit(tr, va, cfg, progress=False, llms=tiny_ds.llms) for _ in range(3))
    finally:
        torch.set_num_threads(threads)
    assert r1.metrics["auc"] == r2.metrics["auc"] == r3.metrics["auc"]
    for r in (r2, r3):
        for (k, a), b in zip(r1.model.state_dict().items(), r.model.state_dict().values()):
            assert torch.equal(a, b), k
    assert not torch.are_deterministic_algorithms_enabled()  # fit leaves the process's setting as it was


def test_fit_trains_with_the_configured_kernels_and_restores_the_process_setting(monkeypatch):
    """``TrainConfig.deterministic`` is what fit trains under, whatever the process had; fit puts it back after,
    also when training fails."""
    import trainer.train as train_mod

    seen = []

    def record(*args):
        seen.append(torch.are_deterministic_algorithms_enabled())
        if len(seen) == 3:
            raise RuntimeError("training failed")
        return "trained"

    monkeypatch.setattr(train_mod, "_fit", record)
    cases = [(False, True), (True, False), (False, True)]  # (process setting, config.deterministic)
    try:
        for i, (process, det) in enumerate(cases):
            torch.use_deterministic_algorithms(process)
            if i < 2:
                assert fit(["sample"], [], dataclasses.replace(_cfg(), deterministic=det), progress=False) == "trained"
            else:
                with pytest.raises(RuntimeError, match="training failed"):
                    fit(["sample"], [], dataclasses.replace(_cfg(), deterministic=det), progress=False)
            assert torch.are_deterministic_algorithms_enabled() == process
    finally:
        torch.use_deterministic_algorithms(False)
    assert seen == [det for _, det in cases]


def test_ema_update_mixes_old_and_new_weights():
    cfg = GMTRouterConfig(emb_dim=D, hidden=32)
    avg, model = GMTRouter(cfg), GMTRouter(cfg)
    old = [p.detach().clone() for p in avg.parameters()]
    ema_update(avg, model, 0.9, step=10_000)  # late: the configured decay
    for a, o, p in zip(avg.parameters(), old, model.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), (0.9 * o + 0.1 * p.detach()).numpy(), rtol=1e-5, atol=1e-6)
    mid = [p.detach().clone() for p in avg.parameters()]
    ema_update(avg, model, 0.9, step=0)  # first step: decay 1/10, mostly the new weights
    for a, o, p in zip(avg.parameters(), mid, model.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), (0.1 * o + 0.9 * p.detach()).numpy(), rtol=1e-5, atol=1e-6)


def test_ema_outside_zero_to_one_is_refused():
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="ema"):
            TrainConfig(ema=bad)


def test_learning_rate_warms_up_then_decays_or_stays():
    cos, const = TrainConfig(steps=1000), TrainConfig(steps=1000, lr_schedule="constant")
    for cfg in (cos, const):  # the same linear warm-up over the first 50 steps
        assert lr_factor(0, cfg) == pytest.approx(1 / 50) and lr_factor(24, cfg) == pytest.approx(0.5, rel=1e-2)
    assert lr_factor(500, cos) == pytest.approx(0.525) and lr_factor(999, cos) == pytest.approx(0.05, abs=1e-4)
    assert [lr_factor(s, const) for s in (49, 500, 999)] == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear")


def test_stride_below_one_is_refused():
    for bad in (0, -4):
        with pytest.raises(ValueError, match="stride"):
            TrainConfig(stride=bad)
    old = TrainConfig().to_dict()
    del old["stride"]  # a config written before the field: its samples had the default stride
    assert TrainConfig.from_dict(old).stride == 4


def test_fit_with_ema_validates_and_returns_the_average(tiny_ds):
    tr = training_samples(tiny_ds, "train", window=10)[:60]
    va = online_samples(tiny_ds, "valid", history=10)[:60]
    cfg = dataclasses.replace(_cfg(steps=8), eval_every=8, k_max=10)
    raw = fit(tr, va, cfg, progress=False, llms=tiny_ds.llms)
    avg = fit(tr, va, dataclasses.replace(cfg, ema=0.5), progress=False, llms=tiny_ds.llms)
    diff = [float((a - b).abs().max()) for a, b in zip(avg.model.parameters(), raw.model.parameters())]
    assert max(diff) > 0  # the same seeded run, but what comes back is the average, not the last weights
    assert evaluate(avg.model, va, tiny_ds.llms)["auc"] == pytest.approx(avg.metrics["auc"])  # chosen on it


def test_turn_cut_samples_are_views_equal_to_cutting_each_history(tiny_ds):
    """With ``turns``, training samples are views of one history per user, equal to building each cut's
    subgraph and keeping its last turns (the serving rule); stride 1 gives every target its own cut."""
    from trainer.data import held_out, subgraph
    from trainer.history import last_turns

    for stride in (4, 1):
        got = training_samples(tiny_ds, "train", stride=stride, turns=7)
        want = []
        for user, tl in tiny_ds.timelines.items():
            pos = [i for i, g in enumerate(tl) if g.split == "train"]
            for s in range(0, len(pos), stride):
                targets = [held_out(tl[i], tiny_ds) for i in pos[s:s + stride] if tl[i].has_pairs]
                if targets:
                    want.append((last_turns(subgraph(user, tl[max(0, pos[s] - 7):pos[s]], tiny_ds), 7), targets))
        assert len(got) == len(want) > 0
        for s, (sub, targets) in zip(got, want):
            assert s.visible.turn_ids == sub.turn_ids and s.visible.conversation_ids == sub.conversation_ids
            for f in ("turn_index", "timestamps", "query_emb", "rating", "prev"):
                np.testing.assert_array_equal(getattr(s.visible, f), getattr(sub, f))
            assert [g.timestamp for g in s.targets] == [g.timestamp for g in targets]
    assert any(len(s.visible) and s.visible.query_emb.base is not None for s in got)  # views, not copies
    assert any((s.visible.prev >= 0).any() for s in got)
