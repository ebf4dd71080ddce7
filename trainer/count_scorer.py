"""The count-based scorer: serves from the first event, needs no training, and is the bar a model must beat.

Score of a candidate = its pairwise win rate in the user's visible comparisons (ties count half), shrunk
towards the global win rate with ``prior`` pseudo-games. The global rates come from the periodic trainer
(``count.json`` in the model registry, counted over the feedback each cycle samples); before the first
cycle every LLM's global rate is 1/2, so a new deployment routes by each user's own wins from their first
comparison.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from graphstore.schema import TrainingSample
from graphstore.counts import win_counts
from prefstream.files import write_atomic
from trainer.baselines import keyed_comparisons, user_counts, win_rates

COUNT_VERSION = "count"  # what a decision answered by this scorer names as its scorer
RATES_FILE = "count.json"


class CountScorer:
    version = COUNT_VERSION
    whole_past = True  # the router attaches each user's whole-past counts (UserSubgraph.win_counts) when it can

    def __init__(self, rates: dict[str, float] | None = None, prior: float = 2.0, pairs: int = 0,
                 games: dict[str, float] | None = None):
        self.rates = dict(rates or {})
        self.prior = prior
        self.pairs = pairs  # comparisons the global rates were counted from
        self.games = dict(games or {})  # each LLM's pairwise games behind its rate (the periodic trainer reads it)

    def score_batch(self, items: Sequence[tuple]) -> list[np.ndarray]:
        """[(history, query_emb, candidates[, conversation_id])] -> one score vector per item (higher = better)."""
        return [win_rates(it[0], [c.llm_id for c in it[2]], self.rates, self.prior) for it in items]

    def decide_batch(self, items: Sequence[tuple], explain: bool = True) -> tuple[list[np.ndarray], list[dict]]:
        """Scores, and per item each candidate's wins and games in the user's visible comparisons."""
        scores = self.score_batch(items)
        if not explain:
            return scores, [{} for _ in items]
        out = []
        for it in items:
            v = it[0]
            wins, games = user_counts(v)
            out.append({"wins": [round(wins.get(c.llm_id, 0.0), 2) for c in it[2]],
                        "games": [games.get(c.llm_id, 0.0) for c in it[2]],
                        "counted": "whole past" if v.win_counts is not None else f"last {len(v)} turns"})
        return scores, out

    def score_samples(self, samples: Sequence[TrainingSample]) -> list[np.ndarray]:
        """Scores for every target group of every sample (the evaluation's interface)."""
        return [win_rates(s.visible, g.llm_ids, self.rates, self.prior) for s in samples for g in s.targets]

    # --- global rates -----------------------------------------------------------------------------
    @classmethod
    def counted(cls, samples: Sequence[TrainingSample], prior: float = 2.0) -> "CountScorer":
        """Global rates counted over the samples' visible comparisons and targets (each comparison once)."""
        groups: dict[tuple, tuple[list[str], np.ndarray]] = {}
        for s in samples:
            for (conv, turn), g in keyed_comparisons(s.visible).items():
                groups.setdefault((s.visible.user_id, conv, turn), g)
            for g in s.targets:
                key = (g.user_id, g.conversation_id, g.turn) if g.turn is not None else (g.user_id, g.query_key, g.timestamp)
                groups[key] = (list(g.llm_ids), np.asarray(g.ratings))  # a target has every rating of its group
        wins, games = win_counts(list(groups.values()))
        return cls({m: wins.get(m, 0.0) / games[m] for m in games if games[m]}, prior, len(groups), games)

    @classmethod
    def from_counts(cls, counts: dict[str, tuple[float, float]], prior: float = 2.0) -> "CountScorer":
        """Global rates from (wins, games) per LLM (GraphStore.global_win_counts); ``pairs`` = pairwise games."""
        return cls({m: w / g for m, (w, g) in counts.items() if g}, prior,
                   int(sum(g for _, g in counts.values()) // 2), {m: g for m, (_, g) in counts.items()})

    def save(self, root: Path | str) -> Path:
        path = Path(root) / RATES_FILE
        write_atomic(path, json.dumps({"rates": self.rates, "prior": self.prior, "pairs": self.pairs,
                                       "games": self.games}, indent=1))
        return path

    @classmethod
    def load(cls, root: Path | str) -> "CountScorer":
        """The registry's global rates, or the uniform prior when the trainer has not counted any yet."""
        try:
            blob = json.loads((Path(root) / RATES_FILE).read_text())
            return cls(blob.get("rates", {}), float(blob.get("prior", 2.0)), int(blob.get("pairs", 0)),
                       blob.get("games", {}))  # files written before ``games`` existed have none
        except (FileNotFoundError, ValueError):
            return cls()

