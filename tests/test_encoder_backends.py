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


# --- the static backend: token vectors distilled once from the packaged transformer ---------------------------

@pytest.fixture(scope="module")
def static_enc(tmp_path_factory):
    return TextEncoder(backend="static", onnx_dir=tmp_path_factory.mktemp("static"), cache_size=0)


def test_the_static_table_is_built_without_network(tmp_path, monkeypatch):
    def no_network(*a, **kw):
        raise OSError("network access while building the static table")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    enc = TextEncoder(backend="static", onnx_dir=tmp_path)
    assert enc.backend == "static" and list(tmp_path.glob("*.static.npy"))
    assert enc.space.endswith(":static") and TextEncoder(backend="onnx").space.endswith(":transformer")


def test_static_vectors_are_the_weighted_mean_of_token_rows(static_enc):
    """The vectorized encoder against a plain loop over the tokenizer's output (truncation, weights, an empty
    text and a text of punctuation only included)."""
    model = static_enc._model
    texts = [*QUESTIONS[:3], "", "?!", QUESTIONS[-1]]
    got = static_enc.encode(texts)
    for text, v in zip(texts, got):
        ids = model.tokenizer.encode(text, add_special_tokens=False).ids[:model.max_seq_length]
        ids = [i for i in ids if i >= 1000] or ids
        if not ids:
            assert not v.any()  # nothing to average: the zero vector, not NaN
            continue
        w = np.log1p(np.array(ids, np.float64))
        ref = (model.table[ids] * w[:, None]).sum(0) / w.sum()
        np.testing.assert_allclose(v, ref / np.linalg.norm(ref), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got[:3], axis=1), 1.0, atol=1e-5)


def test_static_vectors_keep_what_a_query_is_about(static_enc):
    """A query is nearer to another on the same subject than to one on another subject."""
    same = [("Write a Python function that reverses a linked list.",
             "Implement a python function to sort an array of integers in place."),
            ("What is the capital city of Australia?", "Which city is the capital of Canada?"),
            ("Solve for x: 3x + 7 = 22.", "Find the value of y if 5y - 4 = 16.")]
    v = static_enc.encode([t for pair in same for t in pair]).reshape(len(same), 2, -1)
    sim = np.einsum("ad,bd->ab", v[:, 0], v[:, 1])  # [3, 3]: row a's first text against every pair's second
    assert (np.argmax(sim, axis=1) == np.arange(len(same))).all(), sim


def test_the_stored_space_check_tells_the_packaged_spaces_apart(both, static_enc):
    """GraphStore.claim_embedding_space re-encodes stored texts on a graph whose space was never recorded: onnx
    vectors pass as torch's (one space) and static vectors fail as either's (two spaces), at its threshold."""
    from graphstore.base import SPACE_CHECK_COSINE

    torch_enc, onnx_enc = both
    t, o, s = (e.encode(QUESTIONS) for e in (torch_enc, onnx_enc, static_enc))
    assert onnx_enc.space == torch_enc.space != static_enc.space
    assert np.median((t * o).sum(1)) >= SPACE_CHECK_COSINE
    assert np.median((t * s).sum(1)) < SPACE_CHECK_COSINE and np.median((o * s).sum(1)) < SPACE_CHECK_COSINE
