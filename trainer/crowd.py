"""Crowd evidence: how *other* users rated each LLM's answer to the same query text.

    crowd(u, q, m) = sum over comparisons c of q by users v != u of (r_cm - mean_c r) / (n(q, m, not u) + prior)

A comparison is one user's rated answers to one turn of one conversation (graphstore.counts); each answer's
rating is centred on the comparison's mean, so a user who rates everything high adds nothing, and only
comparisons with at least two rated answers count. The sum is shrunk towards 0 by ``prior`` pseudo-answers,
so one stranger's rating moves little and many agreeing ones move more.

Why it helps: the same question answered by the same LLM gets the same answer, so other users' ratings of it
say whether that answer was any good (correct, complete) for this very text, which no amount of the user's own
history on other queries can tell. The requesting user's own ratings never enter (they reach the score through
the personal terms), and a rating of the user can only move their own score, never this term.

Sources: a dataset's training split, or for its held-out targets every split's ratings from before the target
(trainer/data.py, ``evidence(..., before_ms=...)``), the sampled training set of a refresh cycle
(trainer/refresh.py), or the graph's rated turns of the request's query (workers/engine.py via
``GraphStore.query_ratings``). All three go through :class:`CrowdTable`, so they agree on what is counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from graphstore.schema import HeldOutGroup, TrainingSample

CROWD_PRIOR = 1.0  # pseudo-answers of centred rating 0 each crowd average is shrunk with


class CrowdTable:
    """Rated comparisons by (user, conversation, turn index), then per query and LLM every centred answer (with its
    user and time, so :meth:`evidence` can leave out a user and look only before a time)."""

    def __init__(self, prior: float = CROWD_PRIOR):
        self.prior = float(prior)
        self._cmp: dict[tuple, tuple[str, dict[str, float], int | None]] = {}  # comparison -> (query, {llm: rating}, ms)
        self._answers: dict[str, dict[str, list[tuple[str, int | None, float]]]] | None = None  # query -> llm -> answers

    def add(self, user: str, conversation: str | None, turn_index: int, query_key: str, llm: str,
            rating: float | None, timestamp: int | None = None) -> None:
        """One rated answer (the first rating of an answer counts; a NaN or None rating is ignored).
        ``timestamp`` (epoch ms; the comparison's first one counts) lets :meth:`evidence` look only before a time."""
        if rating is None or rating != rating:
            return
        key = (user, conversation if conversation is not None else query_key, int(turn_index))
        entry = self._cmp.setdefault(key, (query_key, {}, timestamp))
        entry[1].setdefault(llm, float(rating))
        self._answers = None

    def add_comparison(self, user: str, conversation: str | None, turn_index: int, query_key: str,
                       llm_ids: Sequence[str], ratings: np.ndarray, timestamp: int | None = None) -> None:
        """One user's rated answers [K] to one turn of one conversation."""
        for m, r in zip(llm_ids, ratings.tolist()):
            self.add(user, conversation, turn_index, query_key, m, r, timestamp)

    def add_group(self, g: HeldOutGroup) -> None:
        self.add_comparison(g.user_id, g.conversation_id, (g.turn or 1) - 1, g.query_key, g.llm_ids, g.ratings,
                            g.timestamp)

    def add_sample(self, s: TrainingSample, before_ms: int | None = None) -> None:
        """A training sample's visible rated turns and its targets (shared comparisons count once); with
        ``before_ms``, only those earlier than it."""
        v, late = s.visible, (lambda ts: before_ms is not None and ts >= before_ms)
        for conv, idx, qk, m, r, ts in zip(v.conversation_ids, v.turn_index.tolist(), v.query_keys, v.llm_ids,
                                           v.rating.tolist(), v.timestamps.tolist()):
            if not late(ts):
                self.add(v.user_id, conv, idx, qk, m, r, int(ts))
        for g in s.targets:
            if not late(g.timestamp):
                self.add_group(g)

    @classmethod
    def from_samples(cls, samples: Iterable[TrainingSample], before_ms: int | None = None,
                     prior: float = CROWD_PRIOR) -> "CrowdTable":
        table = cls(prior)
        for s in samples:
            table.add_sample(s, before_ms)
        return table

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence], prior: float = CROWD_PRIOR) -> "CrowdTable":
        """(query key, user, conversation, turn index, llm, rating) rows (GraphStore.query_ratings)."""
        table = cls(prior)
        for qk, user, conv, idx, llm, rating in rows:
            table.add(user, conv, idx, qk, llm, rating)
        return table

    def _table(self) -> dict[str, dict[str, list[tuple[str, int | None, float]]]]:
        if self._answers is None:
            answers: dict[str, dict[str, list[tuple[str, int | None, float]]]] = {}
            for (user, _, _), (qk, rated, ts) in self._cmp.items():
                if len(rated) < 2:
                    continue  # a single rated answer says nothing about how it compares
                mean = sum(rated.values()) / len(rated)
                for m, r in rated.items():
                    answers.setdefault(qk, {}).setdefault(m, []).append((user, ts, r - mean))
            self._answers = answers
        return self._answers

    def evidence(self, query_key: str, llm_ids: Sequence[str], user: str, before_ms: int | None = None) -> np.ndarray:
        """[K] crowd evidence of each LLM on ``query_key`` from every user but ``user`` (0 when nobody else rated
        it); with ``before_ms``, only comparisons time-stamped before it (one without a time stamp never counts)."""
        by_llm = self._table().get(query_key, {})
        out = np.zeros(len(llm_ids), np.float32)
        for i, m in enumerate(llm_ids):
            s = n = 0.0
            for v, ts, centred in by_llm.get(m, ()):
                if v != user and (before_ms is None or (ts is not None and ts < before_ms)):
                    s += centred
                    n += 1.0
            out[i] = s / (n + self.prior)
        return out

    def attach(self, groups: Iterable[HeldOutGroup], as_of: bool = False) -> None:
        """Set each group's ``crowd`` [K] (its own user excluded); ``as_of``: only from comparisons before the
        group's own time."""
        for g in groups:
            g.crowd = self.evidence(g.query_key, g.llm_ids, g.user_id, g.timestamp if as_of else None)
