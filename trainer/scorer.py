"""Serving-side scoring: one batched graph per micro-batch of requests, no gradients, eval mode."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from graphstore.schema import UserSubgraph
from trainer.calibration import apply_offsets
from trainer.checkpoint import load_checkpoint
from trainer.decision import choose  # noqa: F401 -- the rule is also reached as trainer.scorer.choose
from trainer.graph import Request, build_batch, llm_table, llm_vector
from trainer.model import GMTRouter


class Scorer:
    """Scores candidate LLMs for (user history, query) requests with a trained GMTRouter.

    History turns are matched to the LLMs' input vectors (trainer.graph.llm_vector) by id: the checkpoint's
    catalog plus every candidate seen in a request (so LLMs registered after training work too).
    """

    def __init__(self, model: GMTRouter, version: str = "untrained", llm_emb: dict[str, np.ndarray] | None = None,
                 threads: int | None = None):
        self.model = model.eval()
        self.version = version
        self.llm_emb: dict[str, np.ndarray] = dict(llm_emb or getattr(model, "llm_emb", {}) or {})
        # level offsets of LLMs this model never learned, fitted by the trainer (trainer/calibration.py); the
        # router's ModelSource replaces the dict whole when the trainer writes new ones
        self.offsets: dict[str, float] = {}
        if threads:
            torch.set_num_threads(threads)

    @classmethod
    def load(cls, path: Path | str, space: str | None = None) -> "Scorer":
        """``space``: the vector space of the router's encoder; a checkpoint trained on another is refused (its
        scores would be noise), so the router keeps what it serves or falls back to counting."""
        ck = load_checkpoint(path)
        if space is not None and ck.embedding_space != space:
            raise ValueError(f"{path}: trained on {ck.embedding_space} vectors but this router encodes {space} "
                             "(PREFSTREAM_ENCODER_BACKEND); train a model on this backend")
        return cls(ck.model, ck.version, llm_table(ck.llm_catalog, ck.model.cfg.llm_prices))

    @property
    def uses_crowd(self) -> bool:
        """Whether the model reads other users' ratings of the request's query (the router then reads them)."""
        return getattr(self.model, "crowd_weight", None) is not None

    def score_batch(self, items: list[tuple]) -> list[np.ndarray]:
        """[(history, query_emb [D], candidates[, conversation_id[, crowd [C]]])] -> one score vector [C] per item
        (higher = better). ``conversation_id``: the conversation the request continues (its previous turn is
        evidence); ``crowd``: other users' centred ratings of each candidate on this query (trainer/crowd.py)."""
        return self.decide_batch(items, explain=False)[0]

    @torch.no_grad()
    def decide_batch(self, items: list[tuple], explain: bool = True) -> tuple[list[np.ndarray], list[dict]]:
        """Scores as :meth:`score_batch`, plus per item the explanation of its choice (trainer/explain.py):
        the personal term of each candidate and the turns that pushed the chosen one most."""
        if not items:
            return [], []
        cfg = self.model.cfg
        vec = [[np.asarray(llm_vector(c, cfg.llm_prices), np.float32) for c in it[2]] for it in items]
        for it, v in zip(items, vec):
            for c, x in zip(it[2], v):
                self.llm_emb.setdefault(c.llm_id, x)
        subs: Sequence[UserSubgraph] = [it[0] for it in items]
        reqs = [Request(i, np.asarray(it[1], np.float32),
                        np.stack(v) if v else np.zeros((0, cfg.llm_dim), np.float32),
                        [c.llm_id for c in it[2]], it[3] if len(it) > 3 else None, it[4] if len(it) > 4 else None)
                for i, (it, v) in enumerate(zip(items, vec))]
        b = build_batch(subs, reqs, self.llm_emb, reverse_edges=cfg.reverse_edges, emb_dim=cfg.emb_dim,
                        llm_dim=cfg.llm_dim)
        kept: dict | None = {} if explain else None  # the forward's intermediates, for the explanation
        s = self.model(b, keep=kept).numpy()
        scores = [x.copy() for x in np.split(s, np.cumsum(b.counts)[:-1])]
        offsets = self.offsets
        if offsets:
            scores = [apply_offsets(sc, r.candidate_ids, offsets).astype(sc.dtype) for sc, r in zip(scores, reqs)]
        if not explain:
            return scores, [{} for _ in items]
        from trainer.explain import explain as explain_batch

        turn_ids = [t for sub in subs for t in sub.turn_ids]
        chosen = [choose(sc, it[2]) for sc, it in zip(scores, items)]
        out = explain_batch(self.model, b, turn_ids, chosen, kept)
        for e, r in zip(out, reqs):  # an offset is in the score, so the audit shows it
            met = {m: offsets[m] for m in r.candidate_ids if offsets.get(m)}
            if met:
                e["offsets"] = met
        return scores, out
