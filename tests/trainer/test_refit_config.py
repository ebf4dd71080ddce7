"""A cycle fine-tunes the serving model at the warm learning rate; without one it trains as training does."""

from __future__ import annotations


def test_a_refresh_from_the_serving_model_fine_tunes_at_the_warm_rate():
    from trainer.config import GMTRouterConfig, TrainConfig
    from trainer.model import GMTRouter
    from trainer.refresh import WARM_LR, refit_config

    serving = GMTRouter(GMTRouterConfig(hidden=32))
    warm = refit_config(400, 3, serving)
    assert warm.lr == WARM_LR and warm.model == serving.cfg  # its width, not the default's
    assert (warm.steps, warm.seed, warm.eval_every) == (400, 3, 100)
    assert refit_config(400, 3, serving, warm_lr=5e-4).lr == 5e-4
    cold = refit_config(400, 3, warm_lr=5e-4)  # counting serves: the first model trains from scratch as training does
    assert cold.lr == TrainConfig().lr and cold.model == TrainConfig().model


def test_a_refresh_pulls_back_to_the_serving_weights_by_its_anchor():
    from trainer.model import GMTRouter
    from trainer.refresh import WARM_ANCHOR, refit_config
    from trainer.config import GMTRouterConfig

    serving = GMTRouter(GMTRouterConfig(hidden=32))
    assert refit_config(400, 3, serving).anchor == WARM_ANCHOR > 0  # a cycle keeps near the serving weights
    assert refit_config(400, 3, serving, anchor=30.0).anchor == 30.0
    assert refit_config(400, 3, anchor=30.0).anchor == 0.0  # from scratch there is nothing to pull back to


def _distance(a, b) -> float:
    return sum(float((p.detach() - q.detach()).pow(2).sum()) for p, q in zip(a.parameters(), b.parameters())) ** 0.5


def test_the_anchor_keeps_fine_tuned_weights_near_their_start(tiny_ds):
    """TrainConfig.anchor: the further the pull, the closer the fine-tuned weights stay to the initial model; a
    pull of the whole way each step (lr x anchor >= 1) leaves them where they started."""
    import dataclasses

    from trainer.data import training_samples
    from trainer.model import GMTRouterConfig
    from trainer.train import TrainConfig, fit

    tr = training_samples(tiny_ds, "train", window=20)
    cfg = TrainConfig(model=GMTRouterConfig(emb_dim=32, hidden=32), steps=20, batch_size=16, k_max=20, seed=0)
    start = fit(tr, [], cfg, progress=False, llms=tiny_ds.llms).model
    moved = {a: fit(tr, [], dataclasses.replace(cfg, anchor=a), init=start, progress=False, llms=tiny_ds.llms).model
             for a in (0.0, 100.0, 1e4)}
    d = {a: _distance(m, start) for a, m in moved.items()}
    assert d[0.0] > 0 and d[100.0] < 0.8 * d[0.0]
    assert d[1e4] < 1e-6


def test_a_cycle_without_settings_uses_the_settings_defaults():
    """RefreshConfig's defaults are the PREFSTREAM_TRAINER_* settings' (one place for each), and `prefstream train`
    builds the same configuration from default settings, but for k (the settings' history_turns)."""
    from dataclasses import asdict

    from prefstream.config import Settings
    from trainer.refresh import RefreshConfig
    from trainer.refresh_cli import refresh_config

    s = Settings()
    built, bare = asdict(refresh_config(s)), asdict(RefreshConfig())
    assert built.pop("k") == s.history_turns and bare.pop("k") == 10
    assert built == bare
    changed = refresh_config(s.model_copy(update={"trainer_steps": 7, "trainer_offsets": False}))
    assert changed.steps == 7 and changed.offsets is False
