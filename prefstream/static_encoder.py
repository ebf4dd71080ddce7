"""Static token vectors distilled from the packaged sentence encoder: a text is a weighted mean of table rows.

``build_table(model_dir, path)`` runs the packaged transformer once over every vocabulary token on its own
(``[CLS] token [SEP]``) and keeps the token's output state: a [V, D] table, centered on the mean of the
ordinary tokens (so unrelated texts are not all alike under the cosine). It is built offline from the packaged
weights, on first use, into a cache directory under a lock, like the ONNX export (no download).

Encoding is then a tokenizer call and one weighted average per text: no transformer at run time, only
``tokenizers`` and numpy. Token weights are log(1 + token id): WordPiece ids follow word frequency, so this is
a Zipf estimate of inverse frequency that needs no corpus ("the" weighs little, "eigenvalue" a lot).

The vectors live in their own space (not the transformer's: cosine to it is low), so a model must be trained
and served on the same backend; trainer/checkpoint.py records the space and the router refuses a mismatch.
How this trades quality for speed is measured in bench/results/encoder.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from prefstream.derived import build_once, derived_path

FORMAT = 1  # bump when the table's recipe changes, so old cached files are not reused
FIRST_ORDINARY_ID = 1000  # WordPiece ids below this are padding, [unused*], special tokens (and "!", id 999)
BUILD_BATCH = 1024
CLS_ID, SEP_ID = 101, 102  # WordPiece's [CLS] and [SEP] (StaticEmbedder checks the tokenizer has them)


def cached_table(model_dir: str, cache_dir: Path | str) -> Path:
    """The table file for ``model_dir`` in ``cache_dir``, built now if it is not there yet."""
    path = derived_path(model_dir, cache_dir, (FORMAT,), ".static.npy")
    return build_once(path, lambda p: build_table(model_dir, p), "building the static token table")


def build_table(model_dir: str, path: Path) -> None:
    """Every vocabulary token's output state alone in a sentence -> [V, D] float32 at ``path``, atomically."""
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(model_dir).eval()
    vocab = int(bert.config.vocab_size)
    table = np.empty((vocab, int(bert.config.hidden_size)), np.float32)
    with torch.no_grad():
        for start in range(0, vocab, BUILD_BATCH):
            ids = torch.arange(start, min(start + BUILD_BATCH, vocab))
            x = torch.stack([torch.full_like(ids, CLS_ID), ids, torch.full_like(ids, SEP_ID)], 1)  # [B, 3]
            table[start:start + len(ids)] = bert(input_ids=x, attention_mask=torch.ones_like(x)
                                                 ).last_hidden_state[:, 1].numpy()  # [B, D]
    table -= table[FIRST_ORDINARY_ID:].mean(0)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, table)
    os.replace(tmp, path)


class StaticEmbedder:
    """[N] texts -> [N, D] unit vectors: the log(1 + id)-weighted mean of the text's token rows."""

    def __init__(self, model_dir: str, cache_dir: Path | str, max_seq_length: int = 128):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        self.tokenizer.no_padding()
        if (self.tokenizer.token_to_id("[CLS]"), self.tokenizer.token_to_id("[SEP]")) != (CLS_ID, SEP_ID):
            raise ValueError(f"{model_dir}: not a BERT WordPiece vocabulary; the static backend needs one")
        self.path = cached_table(model_dir, cache_dir)  # checked first: no table is built for another vocabulary
        self.table = np.load(self.path)  # [V, D]
        self.weights = np.log1p(np.arange(len(self.table), dtype=np.float32))  # [V]
        self.max_seq_length = int(max_seq_length)  # tokens a text is truncated to
        self.dim = int(self.table.shape[1])

    def _ids(self, encoding) -> np.ndarray:
        ids = np.asarray(encoding.ids[:self.max_seq_length], np.int64)
        ordinary = ids[ids >= FIRST_ORDINARY_ID]
        return ordinary if len(ordinary) else ids  # a text of special tokens (or none) still gets a vector

    def encode(self, texts: list[str]) -> np.ndarray:
        """[N] texts -> [N, D], all at once (no transformer: nothing to gain from batching)."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        ids = [self._ids(e) for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]
        lengths = np.array([len(i) for i in ids])
        flat = np.concatenate([i for i in ids if len(i)] or [np.zeros(0, np.int64)])
        w = self.weights[flat]  # [T]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        out = np.zeros((len(texts), self.dim), np.float32)
        has = lengths > 0
        if has.any():
            sums = np.add.reduceat(self.table[flat] * w[:, None], starts[has], axis=0)  # [N', D]
            out[has] = sums / np.maximum(np.add.reduceat(w, starts[has])[:, None], 1e-12)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
