"""Time-respecting training samples from one user's stored turns.

Rules (the trainer's contract):
- A comparison group is the user's turns that share conversation, turn index and query: the same question
  at the same point of a conversation answered by several LLMs. It is a target when at least ``min_llms``
  distinct LLMs in it have a rating (``min_llms=1`` also admits single rated turns, for pointwise losses).
- A cut time is drawn at random among target groups' start times that leave >= 1 earlier turn and
  >= ``min_targets`` target groups at or after it (and, with ``cuts_since``, are at or after that time: a
  trainer cycle's window).
- Visible: the last ``k`` turns strictly before the cut, with only the ratings whose feedback time is also
  before the cut (later feedback would leak the future). Targets: the target groups whose every turn is at
  or after the cut, i.e. strictly later than every visible turn, in time order (at most ``max_targets``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np

from graphstore.counts import add_game, per_llm
from graphstore.schema import HeldOutGroup, TrainingSample
from graphstore.subgraph import CONV, INDEX, LLM, QEMB, QKEY, RATING, RATING_MS, TS, assemble, order_key


def _groups(user_id: str, rows: Sequence[Sequence], min_llms: int) -> list[HeldOutGroup]:
    by_key: dict[tuple, list[Sequence]] = {}
    for r in rows:
        by_key.setdefault((r[CONV], int(r[INDEX]), r[QKEY]), []).append(r)
    out = []
    for members in by_key.values():
        start = min(int(r[TS]) for r in members)
        rated: dict[str, float] = {}
        for r in sorted(members, key=order_key):
            if r[RATING] is not None:
                rated.setdefault(r[LLM], float(r[RATING]))
        if len(rated) >= min_llms:
            emb = members[0][QEMB]  # shared with the store's embedding cache: give the sample its own copy
            emb = emb.copy() if emb is not None else np.zeros(0, np.float32)
            out.append(HeldOutGroup(user_id, members[0][QKEY], emb,
                                    list(rated), np.array(list(rated.values()), np.float32), start,
                                    members[0][CONV], int(members[0][INDEX]) + 1))
    out.sort(key=lambda g: (g.timestamp, g.query_key))
    return out


def cut_times(starts: Sequence[int], first: int, min_targets: int = 1) -> list[int]:
    """A user's admissible cuts: the distinct start times of their target groups (``starts``, in time order) that
    leave an earlier turn (later than ``first``, the user's first turn's time) and at least ``min_targets`` target
    groups at or after them (the groups from the same index on: ``starts`` is sorted)."""
    n = len(starts)
    return sorted({int(t) for i, t in enumerate(starts) if t > first and n - i >= min_targets})


def sample_user(user_id: str, rows: Sequence[Sequence], k: int, rng: np.random.Generator, min_targets: int = 1,
                min_llms: int = 2, max_targets: int | None = None, cuts_since: int | None = None,
                ) -> TrainingSample | None:
    """One sample for the user from their whole history, or None when it has no admissible cut (``cuts_since``:
    only the cuts at or after it). GraphStore.sample_training draws the same sample (the same cut from the same
    ``rng``) while reading only what it uses."""
    rows = sorted(rows, key=order_key)
    if not rows:
        return None
    groups = _groups(user_id, rows, min_llms)
    cuts = [c for c in cut_times([g.timestamp for g in groups], int(rows[0][TS]), min_targets)
            if cuts_since is None or c >= cuts_since]
    if not cuts:
        return None
    cut = cuts[int(rng.integers(len(cuts)))]
    targets = [g for g in groups if g.timestamp >= cut][:max_targets]
    visible = assemble(user_id, [r for r in rows if int(r[TS]) < cut], k, ratings_before=cut)
    return TrainingSample(visible, targets)


def sample_at(user_id: str, before: Sequence[Sequence], at: Sequence[Sequence], k: int, cut: int,
              keys: Collection[tuple], min_llms: int = 2) -> TrainingSample:
    """The sample at a drawn ``cut``: visible, the newest ``k`` of ``before`` (rows before the cut) with the ratings
    given before it; targets, the groups of ``at`` (the rows at the targets' positions) whose (conversation, turn
    index, query key) is in ``keys``, in time order."""
    targets = [g for g in _groups(user_id, at, min_llms) if (g.conversation_id, g.turn - 1, g.query_key) in keys]
    return TrainingSample(assemble(user_id, before, k, ratings_before=cut), targets)


def serving_samples(user_id: str, rows: Sequence[Sequence], k: int, after_ms: int, min_llms: int = 2,
                    llms: Collection[str] | None = None, until_ms: int | None = None,
                    counter: PastCounts | None = None) -> list[TrainingSample]:
    """One sample per target group that starts at or after ``after_ms`` and before ``until_ms`` (when given), and
    compares one of ``llms`` (when given), with the history a router serving it reads: the last ``k`` turns before
    it, with the ratings given before it, and the win counts of the user's whole past then (``visible.win_counts``,
    :class:`PastCounts`), which the count-based scorer reads as it does when serving. The promotion judge and the
    live watch score these, so a candidate and counting are judged as they would serve (a training sample's later
    targets read only the turns before its random cut).

    ``rows``: the user's whole history, or (with ``counter``, the user's counts from ``after_ms`` on) the turns
    from ``after_ms`` on and the newest ``k`` before it, which is all a sample reads when the answers of one
    comparison are fewer than ``k`` turns apart."""
    rows = sorted(rows, key=order_key)  # by time first
    stamps = [int(r[TS]) for r in rows]
    counter = PastCounts.of_rows(rows) if counter is None else counter
    out = []
    for g in _groups(user_id, rows, min_llms):
        if g.timestamp < after_ms or (until_ms is not None and g.timestamp >= until_ms):
            continue
        if llms is not None and not any(m in llms for m in g.llm_ids):
            continue
        n_before = bisect_left(stamps, g.timestamp)  # the rows strictly before it
        if n_before:
            # rows is in assemble's order: its newest k rows before the group are the last k of the prefix
            visible = assemble(user_id, rows[max(0, n_before - k):n_before], k, ratings_before=g.timestamp)
            visible.win_counts = counter.before(g.timestamp)  # what the router's count read of the whole past
            out.append(TrainingSample(visible, [g]))
    return out


class PastCounts:
    """A user's pairwise (wins, games) per LLM over their whole past as known at a given time, the way a router
    counts it then (GraphStore.user_win_counts, graphstore.counts): every comparison (conversation, turn index)
    of answers given and rated before that time. Asked at non-decreasing times, each rating is added once: the
    games of two answers of one comparison count from when the later of their two ratings was given."""

    def __init__(self, rated: Iterable[Sequence], start: int | None = None):
        """From (conversation, turn index, LLM, rating, answer time, rating time) rows: the rated answers alone,
        without their text. With ``start``, the answers known before it join their comparisons without being
        counted (:meth:`from_kept` sets the counts known then), and it is asked at times from ``start`` on."""
        # a rating is known from when both it and its answer exist (a rating time before the answer: bad data)
        self.events = sorted((max(int(rms), int(ts)), conv, int(idx), llm, float(r))
                             for conv, idx, llm, r, ts, rms in rated if r is not None and rms is not None)
        self.next = 0
        self.members: dict[tuple, list[tuple[str, float]]] = {}
        self.wins: dict[str, float] = {}
        self.games: dict[str, float] = {}
        while start is not None and self.next < len(self.events) and self.events[self.next][0] < start:
            _, conv, idx, llm, r = self.events[self.next]
            self.next += 1
            self.members.setdefault((conv, idx), []).append((llm, r))

    @classmethod
    def from_kept(cls, rated: Sequence[Sequence], kept: Mapping[str, tuple[float, float]], start: int) -> PastCounts:
        """From the user's kept counts over every comparison (GraphStore.user_win_counts) and the rated answers of
        the comparisons with an answer known at or after ``start`` (rows as in ``__init__``; cypher.
        USER_RATED_SINCE_AND_KEPT): the kept counts hold those comparisons with every answer, so their shares come
        out and the shares of their answers known before ``start`` go back in; the rest was known before it."""
        counts = cls(rated, start)  # its events: every rated answer; its members: those known before start
        every = per_llm((conv, idx, llm, r) for _, conv, idx, llm, r in counts.events)
        known = per_llm((conv, idx, llm, r) for (conv, idx), answers in counts.members.items() for llm, r in answers)
        for m in set(kept) | set(every) | set(known):
            (kw, kg), (ew, eg), (bw, bg) = (c.get(m, (0.0, 0.0)) for c in (kept, every, known))
            if kg - eg + bg > 0:
                counts.wins[m], counts.games[m] = kw - ew + bw, kg - eg + bg
        return counts

    @classmethod
    def of_rows(cls, rows: Sequence[Sequence]) -> PastCounts:
        """From the user's stored turn rows (graphstore.subgraph's columns)."""
        return cls((r[CONV], r[INDEX], r[LLM], r[RATING], r[TS], r[RATING_MS]) for r in rows)

    def before(self, t: int) -> dict[str, tuple[float, float]]:
        """{llm: (wins, games)} over what was answered and rated strictly before ``t`` (epoch ms)."""
        while self.next < len(self.events) and self.events[self.next][0] < t:
            _, conv, idx, llm, r = self.events[self.next]
            self.next += 1
            others = self.members.setdefault((conv, idx), [])
            for m, r2 in others:  # the new answer plays each answer already rated in its comparison, both ways
                add_game(self.wins, self.games, llm, r, r2)
                add_game(self.wins, self.games, m, r2, r)
            others.append((llm, r))
        return {m: (self.wins.get(m, 0.0), g) for m, g in self.games.items()}
