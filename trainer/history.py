"""Cutting a user's visible history: the same rules for training, evaluation and serving.

History lengths are counted in turn nodes (one answer of one LLM), as the serving read counts them
(``PREFSTREAM_HISTORY_TURNS``), so the evaluation measures what a router is served.
"""

from __future__ import annotations

import numpy as np

from graphstore.schema import UserSubgraph


def select_turns(sub: UserSubgraph, idx: np.ndarray) -> UserSubgraph:
    """The subgraph restricted to turns ``idx`` (ascending); ``prev`` links to dropped turns become -1."""
    remap = np.full(len(sub), -1, np.int64)
    remap[idx] = np.arange(len(idx))
    prev = sub.prev[idx]
    prev = np.where(prev >= 0, remap[np.maximum(prev, 0)], -1)
    pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
    return UserSubgraph(sub.user_id, pick(sub.turn_ids), pick(sub.conversation_ids), pick(sub.llm_ids),
                        pick(sub.query_keys), sub.turn_index[idx], sub.timestamps[idx], sub.query_emb[idx],
                        sub.rating[idx], prev)


def truncate(sub: UserSubgraph, k: int) -> UserSubgraph:
    """Keep the last ``k`` comparison groups (turns sharing conversation and turn index) of a subgraph."""
    keys = list(zip(sub.conversation_ids, sub.turn_index.tolist()))
    uniq = list(dict.fromkeys(keys))
    if len(uniq) <= k:
        return sub
    keep_keys = set(uniq[len(uniq) - k:]) if k > 0 else set()
    return select_turns(sub, np.array([i for i, kk in enumerate(keys) if kk in keep_keys], np.int64))


def turn_range(sub: UserSubgraph, a: int, b: int) -> UserSubgraph:
    """Turns a..b-1 of ``sub``: :func:`select_turns` of a contiguous range, with views of its arrays instead of
    copies (``prev`` of a turn whose previous turn is before ``a`` becomes -1)."""
    prev = sub.prev[a:b] - a  # a previous turn always comes earlier in the subgraph
    return UserSubgraph(sub.user_id, sub.turn_ids[a:b], sub.conversation_ids[a:b], sub.llm_ids[a:b],
                        sub.query_keys[a:b], sub.turn_index[a:b], sub.timestamps[a:b], sub.query_emb[a:b],
                        sub.rating[a:b], np.where(prev >= 0, prev, -1))


def last_turns(sub: UserSubgraph, n: int) -> UserSubgraph:
    """Keep the last ``n`` turn nodes (what serving reads with settings.history_turns = n); views of ``sub``."""
    if len(sub) <= n:
        return sub
    return turn_range(sub, len(sub) - n, len(sub))


def serving_history() -> int:
    """The number of visible turns routers read by default (settings.history_turns), which evaluation uses too."""
    from prefstream.config import Settings

    return Settings.model_fields["history_turns"].default
