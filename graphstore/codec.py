"""Embeddings as compact strings: base64 of little-endian float32 bytes.

A 384-float list property costs the server and the client a parse of 384 numbers per node on every read;
one base64 string is a single value on both backends and decodes with one numpy call (bench/graph_store.py
measures both encodings).
"""

from __future__ import annotations

import base64

import numpy as np

DTYPE = np.dtype("<f4")


def encode(vec: np.ndarray | None) -> str | None:
    """A 1-D vector as a base64 string (None stays None)."""
    if vec is None:
        return None
    arr = np.ascontiguousarray(np.asarray(vec, dtype=DTYPE).reshape(-1))
    return base64.b64encode(arr.tobytes()).decode("ascii")


def decode(text: str | None) -> np.ndarray | None:
    """The vector back (float32), or None."""
    if text is None:
        return None
    return np.frombuffer(base64.b64decode(text), dtype=DTYPE).astype(np.float32)


def stack(texts: list[str | None]) -> np.ndarray:
    """[N, D] float32 from encoded rows; a missing row becomes zeros; no rows at all gives [0, 0]."""
    return stack_vectors([decode(t) for t in texts])


def stack_vectors(vecs: list[np.ndarray | None]) -> np.ndarray:
    """``stack`` for already decoded rows: D is the first present row's width; a missing row, or one of
    another width, becomes zeros; always a new array."""
    dim = next((v.shape[0] for v in vecs if v is not None), 0)
    if vecs and all(v is not None and v.shape[0] == dim for v in vecs):  # the usual case: one copy
        return np.concatenate(vecs).astype(np.float32, copy=False).reshape(len(vecs), dim)
    out = np.zeros((len(vecs), dim), np.float32)
    for i, v in enumerate(vecs):
        if v is not None and v.shape[0] == dim:
            out[i] = v
    return out
