"""Rows of the USER_TURNS query -> UserSubgraph (oldest first, numpy arrays).

``prev`` follows the stored FOLLOWS rule (previous turn index of the same conversation) and is resolved
here from the rows themselves, which saves the hot read a second traversal: among the subgraph's turns at
turn_index - 1 of the same conversation, the one answered by the same LLM, else the earliest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from graphstore import codec
from graphstore.schema import UserSubgraph

# column order of cypher.USER_TURNS after the leading uid, then the decoded query embedding (or None) that
# GraphStore._user_rows appends from its cache
TURN_ID, CONV, LLM, QKEY, INDEX, TS, RATING, RATING_MS, QEMB = range(9)


def order_key(row: Sequence) -> tuple[int, str]:
    return (int(row[TS]), str(row[TURN_ID]))


def assemble(user_id: str, rows: Sequence[Sequence], k: int | None = None,
             ratings_before: int | None = None) -> UserSubgraph:
    """Keep the newest ``k`` rows, oldest first; ratings given at or after ``ratings_before`` become NaN
    (what was not yet known at that time)."""
    rows = sorted(rows, key=order_key)
    if k is not None:
        rows = rows[-k:] if k > 0 else []
    n = len(rows)
    prev = np.full(n, -1, np.int64)
    seen: dict[tuple[str, int], list[int]] = {}
    index = [int(r[INDEX]) for r in rows]
    for i, r in enumerate(rows):
        before = seen.get((r[CONV], index[i] - 1))
        if before:
            llm = r[LLM]
            prev[i] = next((j for j in before if rows[j][LLM] == llm), before[0])
        seen.setdefault((r[CONV], index[i]), []).append(i)

    nan = math.nan
    if ratings_before is None:
        ratings = [nan if r[RATING] is None else float(r[RATING]) for r in rows]
    else:
        ratings = [nan if r[RATING] is None or r[RATING_MS] is None or int(r[RATING_MS]) >= ratings_before
                   else float(r[RATING]) for r in rows]

    return UserSubgraph(
        user_id=user_id,
        turn_ids=[r[TURN_ID] for r in rows],
        conversation_ids=[r[CONV] for r in rows],
        llm_ids=[r[LLM] for r in rows],
        query_keys=[r[QKEY] for r in rows],
        turn_index=np.array(index, np.int64),
        timestamps=np.array([int(r[TS]) for r in rows], np.int64),
        query_emb=codec.stack_vectors([r[QEMB] for r in rows]),
        rating=np.array(ratings, np.float32),
        prev=prev,
    )
