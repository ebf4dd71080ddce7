"""Check each user's kept win counts against their stored ratings, and rebuild those that differ.

The writes keep every user's pairwise (wins, games) per LLM on WIN_COUNT edges: after a write, the comparisons it
touched are recounted from their stored ratings, and each rated answer keeps its share (cypher.RECOUNT_COMPARISONS).
A count can still go stale: the graph server may lose the recount it acknowledged while keeping the rating before
it (an append-only file synced every second), and a hand edit of the graph bypasses the recount. Nothing reads
those ratings again until the comparison is touched. On the local stack the broker's event topics are deleted
once ingested, so replaying the ingest cannot heal it there either.

:func:`check_win_counts` counts each user's rated comparisons again here (graphstore.counts, the one definition)
and compares, per user, the kept counts and every answer's kept share; with ``repair`` it rebuilds the users that
differ (GraphStore.rebuild_win_counts) and checks them once more. ``prefstream counts`` runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from graphstore.base import RECOUNT_USERS, chunks
from graphstore.counts import add_game, per_llm

if TYPE_CHECKING:
    from graphstore.base import GraphStore

Counts = dict[str, tuple[float, float]]  # {LLM id: (wins, games)}


@dataclass(frozen=True)
class UserCheck:
    """One user's kept counts against a count of their stored ratings."""

    user_id: str
    answers: int  # rated answers
    stale_shares: int  # rated answers whose kept share is not what their comparison counts now (or is unset)
    kept: Counts  # the WIN_COUNT edges (edges with no games and no wins left out)
    counted: Counts  # graphstore.counts.per_llm over the stored ratings

    @property
    def ok(self) -> bool:
        return self.stale_shares == 0 and self.kept == self.counted

    def differing(self) -> dict[str, tuple[tuple[float, float], tuple[float, float]]]:
        """{LLM: (kept, counted)} for the LLMs whose two counts differ ((0, 0) where one has none)."""
        none = (0.0, 0.0)
        pairs = {m: (self.kept.get(m, none), self.counted.get(m, none)) for m in set(self.kept) | set(self.counted)}
        return {m: pair for m, pair in sorted(pairs.items()) if pair[0] != pair[1]}


@dataclass
class CountReport:
    """What :func:`check_win_counts` found: users and rated answers checked, the users that differed, and with a
    repair, the users rebuilt and those that still differed when checked again (a write in between can make a
    user differ for a moment: check them again)."""

    users: int = 0
    answers: int = 0
    off: list[UserCheck] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    still_off: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing differs now: nothing differed, or everything that did was rebuilt and checks out."""
        return not self.still_off and (not self.off or len(self.repaired) == len(self.off))

    def to_dict(self) -> dict:
        off = [{**asdict(c), "differing": {m: [list(k), list(n)] for m, (k, n) in c.differing().items()}}
               for c in self.off]
        return {"users": self.users, "answers": self.answers, "ok": self.ok, "off": off,
                "repaired": self.repaired, "still_off": self.still_off}


def stale_shares(rows: Iterable[tuple]) -> int:
    """How many of the rated answers ((position, LLM, rating, share wins, share games) rows, GraphStore.
    rated_shares) keep a share other than what their comparison (position) counts: a game against each other
    rated answer of it, a win if rated higher, half on a tie."""
    by_pos: dict[str, list[tuple]] = {}
    for r in rows:
        by_pos.setdefault(r[0], []).append(r)
    stale = 0
    for answers in by_pos.values():
        for i, (_, llm, rating, wins, games) in enumerate(answers):
            w: dict[str, float] = {}
            g: dict[str, float] = {}
            for j, other in enumerate(answers):
                if j != i:
                    add_game(w, g, llm, float(rating), float(other[2]))
            want = (w.get(llm, 0.0), g.get(llm, 0.0))
            stale += wins is None or games is None or (float(wins), float(games)) != want
    return stale


def user_check(user_id: str, rows: Sequence[tuple], kept: dict[str, tuple]) -> UserCheck:
    """The check of one user from GraphStore.rated_shares' rows and kept counts."""
    counted = per_llm((pos, llm, rating) for pos, llm, rating, _, _ in rows)
    kept = {m: (float(w or 0.0), float(g or 0.0)) for m, (w, g) in kept.items() if w or g}
    return UserCheck(user_id, len(rows), stale_shares(rows), kept, counted)


def check_users(store: "GraphStore", user_ids: Sequence[str]) -> list[UserCheck]:
    """:func:`user_check` of each user, from one read per batch of users."""
    rated, kept = store.rated_shares(user_ids)
    return [user_check(u, rated[u], kept[u]) for u in dict.fromkeys(user_ids)]


def check_win_counts(store: "GraphStore", user_ids: Sequence[str] | None = None, repair: bool = False,
                     progress: Callable[[int], None] | None = None) -> CountReport:
    """Check every user's kept counts (or those of ``user_ids``), ``RECOUNT_USERS`` users a read; with ``repair``,
    rebuild each batch's users that differ and check them again. ``progress`` is told how many users each batch
    held."""
    users = [u for u, _ in store.active_users()] if user_ids is None else list(dict.fromkeys(user_ids))
    report = CountReport(users=len(users))
    for part in chunks(users, RECOUNT_USERS):
        checks = check_users(store, part)
        report.answers += sum(c.answers for c in checks)
        off = [c for c in checks if not c.ok]
        report.off += off
        if repair and off:
            ids = [c.user_id for c in off]
            store.rebuild_win_counts(ids)
            report.repaired += ids
            report.still_off += [c.user_id for c in check_users(store, ids) if not c.ok]
        if progress is not None:
            progress(len(part))
    return report
