"""Pairwise win counts: the one definition every count-based scorer and baseline uses.

A comparison is the rated answers one user gave to one turn of one conversation (the answers sharing
conversation id and turn index). In it, each LLM plays every other LLM once: a win if rated higher, half a
win on a tie.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def add_game(wins: dict[str, float], games: dict[str, float], llm: str, rating: float, other: float) -> None:
    """Count one game of ``llm`` (rated ``rating``) against an answer rated ``other``: a win if rated higher, half
    a win on a tie."""
    games[llm] = games.get(llm, 0.0) + 1.0
    wins[llm] = wins.get(llm, 0.0) + (1.0 if rating > other else 0.5 if rating == other else 0.0)


def win_counts(groups: Iterable[tuple[Sequence[str], np.ndarray]]) -> tuple[dict[str, float], dict[str, float]]:
    """Pairwise wins and games of each LLM (ties count half) over (llm_ids, ratings) groups."""
    wins: dict[str, float] = {}
    games: dict[str, float] = {}
    for llms, r in groups:
        for a in range(len(llms)):
            for b in range(len(llms)):
                if a != b:
                    add_game(wins, games, llms[a], r[a], r[b])
    return wins, games


def comparisons(rows: Iterable[tuple]) -> list[tuple[list[str], np.ndarray]]:
    """(*key, llm id, rating) rows -> the (llm_ids, ratings) of each comparison, one per distinct key
    (conversation id and turn index; with the user id first when rows of several users are mixed)."""
    groups: dict[tuple, tuple[list[str], list[float]]] = {}
    for *key, llm, rating in rows:
        g = groups.setdefault(tuple(key), ([], []))
        g[0].append(llm)
        g[1].append(float(rating))
    return [(ls, np.array(rs)) for ls, rs in groups.values()]


def per_llm(rows: Iterable[tuple]) -> dict[str, tuple[float, float]]:
    """{llm id: (wins, games)} over the comparisons of the rows."""
    wins, games = win_counts(comparisons(rows))
    return {m: (wins.get(m, 0.0), g) for m, g in games.items()}
