"""A stand-in for TextEncoder in tests that must not load the model: the same lookup contract, and a record
of which texts the "model" had to embed."""

from __future__ import annotations

import numpy as np


class FakeEncoder:
    def __init__(self, dim: int):
        self.dim = dim
        self.embedded: list[str] = []  # texts neither the lookup nor anything else had a vector for
        self.fail = False  # raise after the lookup, as a broken model would

    def encode(self, texts, lookup=None):
        found = lookup(texts) if lookup else [None] * len(texts)
        if self.fail:
            raise RuntimeError("encoder broke after the lookup")
        self.embedded += [t for t, v in zip(texts, found) if v is None]
        return np.stack([np.ones(self.dim, np.float32) if v is None else v for v in found]) if texts \
            else np.zeros((0, self.dim), np.float32)
