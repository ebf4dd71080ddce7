"""TextEncoder's second cache: texts a lookup knows never reach the model (the real packaged encoder)."""

from __future__ import annotations

import numpy as np


def test_lookup_vectors_are_used_and_cached(encoder):
    stored = np.zeros(encoder.dim, np.float32)
    stored[0] = 1.0
    asked: list[list[str]] = []

    def lookup(texts):
        asked.append(list(texts))
        return [stored if t == "stored text" else None for t in texts]

    a = encoder.encode(["stored text", "a sentence nobody stored"], lookup=lookup)
    np.testing.assert_array_equal(a[0], stored)  # not what the model gives for this text
    assert abs(float(np.linalg.norm(a[1])) - 1.0) < 1e-4 and abs(float(a[1] @ stored)) < 0.99
    b = encoder.encode(["stored text", "a sentence nobody stored"], lookup=lookup)
    np.testing.assert_array_equal(a, b)
    assert asked == [["stored text", "a sentence nobody stored"]]  # the second call was served by the LRU cache
    fresh = encoder.encode(["stored text 2"])  # no lookup: the model
    assert abs(float(np.linalg.norm(fresh[0])) - 1.0) < 1e-4
