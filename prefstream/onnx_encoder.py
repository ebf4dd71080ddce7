"""The sentence encoder on ONNX Runtime: the packaged model exported once, offline, then int8 per channel.

``export(model_dir, path)`` builds the model from the packaged weights with ``torch.onnx.export`` (no
download) and quantizes its MatMul weights to int8 per output channel; the embedding tables stay float
(bench/results/encoder.md has the cosines to the torch vectors and the eval AUC). The file is built on first use into a cache
directory, under a lock, so processes that start together build it once. ``OnnxEmbedder`` then needs only
onnxruntime and tokenizers: no torch, no transformers at run time.

Vectors are the sentence-transformers ones: mean of the last hidden states over real tokens, L2-normalized.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from prefstream.derived import build_once, derived_path

FORMAT = 1  # bump when the exported graph changes, so old cached files are not reused


def cached_model(model_dir: str, cache_dir: Path | str, quantize: bool = True) -> Path:
    """The ONNX file for ``model_dir`` in ``cache_dir``, exported (and quantized) now if it is not there yet."""
    path = derived_path(model_dir, cache_dir, (FORMAT, quantize), ".int8.onnx" if quantize else ".onnx")
    return build_once(path, lambda p: export(model_dir, p, quantize), "exporting the encoder to ONNX")


def export(model_dir: str, path: Path, quantize: bool = True) -> None:
    """Export the transformer of ``model_dir`` to ONNX (dynamic batch and length) at ``path``, atomically."""
    import torch
    from transformers import AutoModel

    class Hidden(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):  # [B, T] each -> [B, T, D]
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    model = Hidden(AutoModel.from_pretrained(model_dir).eval())
    x = torch.ones(2, 8, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    float_path = tmp.with_suffix(".float.onnx") if quantize else tmp
    with torch.no_grad():
        torch.onnx.export(model, (x, x, torch.zeros_like(x)), str(float_path), input_names=names,
                          output_names=["hidden"], opset_version=17, dynamo=False,
                          dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "hidden"]})
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(float_path), str(tmp), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"])  # the embedding tables stay float
        float_path.unlink(missing_ok=True)
    os.replace(tmp, path)


class OnnxEmbedder:
    """[N] texts -> [N, D] unit vectors with ONNX Runtime; a batch is formed from texts of similar length, so
    a short text is not padded to a long neighbour. With ``threads`` > 1, that many runs go at once, each on one
    thread (ONNX Runtime releases the GIL): short single texts gain little from intra-op threads, whose pool
    also spins while it waits."""

    def __init__(self, model_dir: str, cache_dir: Path | str, max_seq_length: int = 128, threads: int = 1,
                 quantize: bool = True):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.path = cached_model(model_dir, cache_dir, quantize)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.threads = max(int(threads), 1)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="onnx") if self.threads > 1 else None
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.max_seq_length = max_seq_length
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    @property
    def max_seq_length(self) -> int:
        return self._max_len

    @max_seq_length.setter
    def max_seq_length(self, n: int) -> None:
        self._max_len = int(n)
        self.tokenizer.enable_truncation(self._max_len)

    def encode(self, texts: list[str], batch_size: int = 1) -> np.ndarray:
        """[N] texts -> [N, D]. One text per run by default: on one CPU thread, length-sorted batches of 4 or 16
        gained little over single texts (bench/results/encoder.md), and one text never waits for another."""
        encs = self.tokenizer.encode_batch(texts)
        out = np.empty((len(texts), self.dim), np.float32)
        order = np.argsort([len(e.ids) for e in encs], kind="stable")
        runs = [order[i:i + batch_size] for i in range(0, len(texts), batch_size)]
        if self._pool is not None and len(runs) > 1:
            vecs = list(self._pool.map(lambda idx: self._run(encs, idx), runs))
        else:
            vecs = [self._run(encs, idx) for idx in runs]
        for idx, v in zip(runs, vecs):
            out[idx] = v
        return out

    def _run(self, encs: list, idx: np.ndarray) -> np.ndarray:
        """[B] tokenized texts (indices into ``encs``) -> [B, D] unit vectors, in one session run."""
        width = max(len(encs[i].ids) for i in idx)
        ids = np.zeros((len(idx), width), np.int64)  # [B, T]
        mask = np.zeros_like(ids)
        for row, i in enumerate(idx):
            ids[row, :len(encs[i].ids)] = encs[i].ids
            mask[row, :len(encs[i].ids)] = encs[i].attention_mask
        hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask,
                                         "token_type_ids": np.zeros_like(ids)})[0]  # [B, T, D]
        v = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)  # [B, D]
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
