"""One-file checkpoints: torch.save of a plain dict with a format version, configs, metrics and weights."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from graphstore.schema import LLMInfo
from prefstream.config import get_settings
from prefstream.encoder import embedding_space
from trainer.graph import llm_table
from trainer.model import GMTRouter, GMTRouterConfig

FORMAT_VERSION = 2  # 2: the model with the Bayesian preference posterior (1 is not readable)


@dataclass
class Checkpoint:
    model: GMTRouter
    version: str
    train_config: dict
    metrics: dict
    llm_catalog: dict[str, LLMInfo] = field(default_factory=dict)
    created: float = 0.0
    embedding_space: str = ""  # the encoder's vector space it was trained on (prefstream.encoder.embedding_space)


def _catalog_to_plain(llms: Mapping[str, LLMInfo] | None) -> dict:
    return {k: {"description": v.description, "price_in": float(v.price_in), "price_out": float(v.price_out),
                "embedding": np.asarray(v.embedding, np.float32).tolist()} for k, v in (llms or {}).items()}


def save_checkpoint(model: GMTRouter, path: Path | str, *, version: str, train_config: dict | object | None = None,
                    metrics: dict | None = None, llm_catalog: Mapping[str, LLMInfo] | None = None,
                    embedding_space: str | None = None) -> Path:
    """Write atomically (temp file + rename) so a watcher never reads half a checkpoint. ``embedding_space``:
    the vector space of the embeddings it was trained on (default: this deployment's encoder settings)."""
    path = Path(path)
    if embedding_space is None:
        embedding_space = settings_space()
    path.parent.mkdir(parents=True, exist_ok=True)
    if train_config is not None and hasattr(train_config, "to_dict"):
        train_config = train_config.to_dict()
    blob = {
        "format_version": FORMAT_VERSION,
        "version": version,
        "model_config": model.cfg.to_dict(),
        "train_config": train_config or {},
        "metrics": metrics or {},
        "llm_catalog": _catalog_to_plain(llm_catalog),
        "state_dict": model.state_dict(),
        "created": time.time(),
        "embedding_space": embedding_space,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path | str) -> Checkpoint:
    blob = torch.load(Path(path), map_location="cpu", weights_only=False)
    fv = blob.get("format_version")
    if fv != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {fv!r} is not supported (expected {FORMAT_VERSION})")
    model = GMTRouter(GMTRouterConfig.from_dict(blob["model_config"]))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    cat = {k: LLMInfo(k, v["description"], v["price_in"], v["price_out"], np.asarray(v["embedding"], np.float32))
           for k, v in blob.get("llm_catalog", {}).items()}
    model.llm_emb = llm_table(cat, model.cfg.llm_prices)
    # checkpoints from before the static encoder were all trained on the transformer's vectors
    space = blob.get("embedding_space") or embedding_space(get_settings().encoder, "onnx")
    return Checkpoint(model, blob["version"], blob.get("train_config", {}), blob.get("metrics", {}), cat,
                      blob.get("created", 0.0), space)


def settings_space() -> str:
    """The vector space of this deployment's encoder (PREFSTREAM_ENCODER, PREFSTREAM_ENCODER_BACKEND)."""
    s = get_settings()
    return embedding_space(s.encoder, s.encoder_backend)
