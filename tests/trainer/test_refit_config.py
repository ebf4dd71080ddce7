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
