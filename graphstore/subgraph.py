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
    if not rows:
        return UserSubgraph(user_id=user_id, query_emb=codec.stack_vectors([]))
    cols = list(zip(*rows))  # column-wise in one C call
    convs, llms = cols[CONV], cols[LLM]
    index = [int(x) for x in cols[INDEX]]
    prev = [-1] * len(rows)
    seen: dict[tuple[str, int], list[int]] = {}
    for i, key in enumerate(zip(convs, index)):
        before = seen.get((key[0], key[1] - 1))
        if before:
            llm = llms[i]
            prev[i] = next((j for j in before if llms[j] == llm), before[0])
        seen.setdefault(key, []).append(i)

    nan = math.nan
    if ratings_before is None:
        ratings = [nan if x is None else float(x) for x in cols[RATING]]
    else:
        ratings = [nan if x is None or ms is None or int(ms) >= ratings_before else float(x)
                   for x, ms in zip(cols[RATING], cols[RATING_MS])]

    return UserSubgraph(
        user_id=user_id,
        turn_ids=list(cols[TURN_ID]),
        conversation_ids=list(convs),
        llm_ids=list(llms),
        query_keys=list(cols[QKEY]),
        turn_index=np.array(index, np.int64),
        timestamps=np.array([int(x) for x in cols[TS]], np.int64),
        query_emb=codec.stack_vectors(list(cols[QEMB])),
        rating=np.array(ratings, np.float32),
        prev=np.array(prev, np.int64),
    )
