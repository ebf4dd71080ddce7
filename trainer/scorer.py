"""Serving-side scoring: one batched graph per micro-batch of requests, no gradients, eval mode."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from graphstore.schema import LLMInfo, UserSubgraph
from trainer.checkpoint import load_checkpoint
from trainer.graph import Request, build_batch
from trainer.model import GMTRouter


class Scorer:
    """Scores candidate LLMs for (user history, query) requests with a trained GMTRouter.

    History turns are matched to LLM description embeddings by id: the checkpoint's catalog plus every
    candidate seen in a request (so LLMs registered after training work too).
    """

    def __init__(self, model: GMTRouter, version: str = "untrained", llm_emb: dict[str, np.ndarray] | None = None,
                 threads: int | None = None):
        self.model = model.eval()
        self.version = version
        self.llm_emb: dict[str, np.ndarray] = dict(llm_emb or getattr(model, "llm_emb", {}) or {})
        if threads:
            torch.set_num_threads(threads)

    @classmethod
    def load(cls, path: Path | str) -> "Scorer":
        ck = load_checkpoint(path)
        return cls(ck.model, ck.version, {k: v.embedding for k, v in ck.llm_catalog.items()})

    @torch.no_grad()
    def score_batch(self, items: list[tuple[UserSubgraph, np.ndarray, list[LLMInfo]]]) -> list[np.ndarray]:
        """[(history, query_emb [D], candidates)] -> one score vector [C] per item (higher = better)."""
        if not items:
            return []
        for _, _, cands in items:
            for c in cands:
                self.llm_emb.setdefault(c.llm_id, np.asarray(c.embedding, np.float32))
        subs: Sequence[UserSubgraph] = [it[0] for it in items]
        d = self.model.cfg.emb_dim
        reqs = [Request(i, np.asarray(q, np.float32),
                        np.stack([np.asarray(c.embedding, np.float32) for c in cands]) if cands else np.zeros((0, d), np.float32))
                for i, (_, q, cands) in enumerate(items)]
        b = build_batch(subs, reqs, self.llm_emb, reverse_edges=self.model.cfg.reverse_edges,
                        emb_dim=self.model.cfg.emb_dim)
        s = self.model(b).numpy()
        return [x.copy() for x in np.split(s, np.cumsum(b.counts)[:-1])]
