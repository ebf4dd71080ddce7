"""The two encoder backends: same vectors (within int8), the ONNX export needs no network, and a missing
onnxruntime falls back to torch with one log line."""

from __future__ import annotations

import logging
import socket
import sys

import numpy as np
import pytest

from prefstream.encoder import TextEncoder

QUESTIONS = [
    "Write a function to find the summation of tuple elements in the given tuple list.",
    "What is the capital of Australia, and why was it chosen over Sydney and Melbourne?",
    "Explain the difference between a process and a thread to a new programmer, with an example in Python.",
    "A bat and a ball cost $1.10 in total. The bat costs $1.00 more than the ball. How much does the ball cost?",
    "Translate into French: the meeting is moved to Thursday afternoon because the room is booked.",
    "Summarize the causes of the French Revolution in three bullet points.",
    "def merge(a, b):\n    out = []\n    while a and b:\n        out.append(a.pop(0) if a[0] < b[0] else b.pop(0))\n"
    "    return out + a + b\n# what is wrong with this merge, and what is its complexity?",
    "If all bloops are razzies and all razzies are lazzies, are all bloops definitely lazzies? Explain.",
    "Give me a packing list for a three-day hiking trip in the Alps in late September.",
    "How do vaccines train the immune system? Keep it under 100 words.",
] * 2 + ["Prove that the square root of 2 is irrational. " * 20]  # one text longer than the token limit


@pytest.fixture(scope="module")
def both():
    return TextEncoder(backend="torch"), TextEncoder(backend="onnx")


def test_onnx_and_torch_give_the_same_unit_vectors(both):
    torch_enc, onnx_enc = both
    assert onnx_enc.backend == "onnx" and onnx_enc.dim == torch_enc.dim
    a, b = onnx_enc.encode(QUESTIONS), torch_enc.encode(QUESTIONS)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    cos = (a * b).sum(1)
    assert cos.mean() >= 0.99 and cos.min() >= 0.98, cos
    # a different text is far from it: the agreement is not the trivial kind
    assert float(a[0] @ b[1]) < 0.9


def test_the_onnx_export_needs_no_network(tmp_path, monkeypatch):
    def no_network(*a, **kw):
        raise OSError("network access during the ONNX export")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = TextEncoder(backend="onnx", onnx_dir=tmp_path)  # a fresh directory: exported now
    assert enc.backend == "onnx" and list(tmp_path.glob("*.int8.onnx"))
    assert enc.encode(QUESTIONS[:2]).shape == (2, enc.dim)


def test_without_onnxruntime_the_onnx_backend_falls_back_to_torch(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with caplog.at_level(logging.WARNING, logger="prefstream.encoder"):
        enc = TextEncoder(backend="onnx")
    assert enc.backend == "torch"
    lines = [r.getMessage() for r in caplog.records if r.name == "prefstream.encoder"]
    assert len(lines) == 1 and "onnxruntime is not installed" in lines[0]
    assert enc.encode(QUESTIONS[:1]).shape == (1, enc.dim)
