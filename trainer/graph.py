"""UserSubgraphs + requests -> one batched PyG HeteroData; the same builder serves training and serving.

Node types and edges follow ``graphstore.schema`` (NODE_TYPES / EDGE_TYPES), so the stored graph and the
model graph share one definition. One ``user`` node per subgraph (two requests of the same subgraph share
it), one ``query`` node per distinct query text, one ``llm`` node per distinct LLM, one ``turn`` and one
``response`` node per visible answer. Feedback lives on the response node; NaN ratings become
``has_rating = 0``. The request query and the candidate LLMs are not graph nodes: the head reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from graphstore.schema import EDGE_TYPES, NODE_TYPES, UserSubgraph

#: Response node features: centered rating within its comparison, has rating, raw rating,
#: has a rated sibling answer, deviation from the user's mean rating.
RESPONSE_FEATURES = 5
#: Reverse edges (optional, see GMTRouterConfig.reverse_edges): user -> turn, previous turn -> next turn.
REVERSE_EDGE_TYPES: tuple[tuple[str, str, str], ...] = (("user", "rev_by", "turn"), ("turn", "rev_follows", "turn"))
RECENCY_TURNS = 6.0  # turn recency feature exp(-age / RECENCY_TURNS), age in turns from the newest
#: Turn node features: recency exp(-age / RECENCY_TURNS) and age / 100 (age in turns, newest = 0).
TURN_FEATURES = 2


def metadata(reverse_edges: bool = False) -> tuple[list[str], list[tuple[str, str, str]]]:
    edges = list(EDGE_TYPES) + (list(REVERSE_EDGE_TYPES) if reverse_edges else [])
    return list(NODE_TYPES), edges


@dataclass
class Request:
    """Score ``candidates`` for ``query_emb`` on behalf of subgraph number ``user``."""

    user: int
    query_emb: np.ndarray  # [D]
    candidates: np.ndarray  # [C, D] description embeddings of the candidate LLMs


@dataclass
class GraphBatch:
    """A batched graph plus the request-side tensors the scoring head needs.

    B = requests, N_c = all candidates of all requests, P = (candidate, rated visible turn) pairs.
    """

    data: HeteroData
    query: Tensor  # [B, D] request query embeddings
    req_user: Tensor  # [B] user node of each request
    cand: Tensor  # [N_c, D] candidate LLM embeddings
    cand_req: Tensor  # [N_c] request of each candidate
    mem_cand: Tensor  # [P] candidate index
    mem_turn: Tensor  # [P] turn node index (a rated turn of the candidate's user)
    counts: list[int]  # candidates per request, to split scores back
    cand_unique: Tensor | None = None  # [N_u, D] distinct candidate embeddings (projected once)
    cand_inv: Tensor | None = None  # [N_c] row of cand_unique for each candidate


def _response_features(sub: UserSubgraph) -> tuple[np.ndarray, np.ndarray]:
    """[T, RESPONSE_FEATURES] feedback as the model sees it (unrated turns: zeros but the raw slot), and
    [T] the comparison group (turns sharing conversation and turn index) of each turn, numbered from 0."""
    t = len(sub)
    r = sub.rating.astype(np.float32)
    has = ~np.isnan(r)
    feat = np.zeros((t, RESPONSE_FEATURES), np.float32)
    group = np.zeros(t, np.int64)
    if t == 0:
        return feat, group
    rr = np.where(has, r, 0.5)
    keys: dict[tuple[str, int], list[int]] = {}
    for i, (c, ti) in enumerate(zip(sub.conversation_ids, sub.turn_index.tolist())):
        keys.setdefault((c, ti), []).append(i)
    for n, idx in enumerate(keys.values()):
        group[idx] = n
        rated = [i for i in idx if has[i]]
        if len(rated) >= 2:
            mean = float(rr[rated].mean())
            for i in rated:
                feat[i, 0] = rr[i] - mean
                feat[i, 3] = 1.0
    user_mean = float(rr[has].mean()) if has.any() else 0.5
    feat[:, 1] = has
    feat[:, 2] = rr
    feat[:, 4] = np.where(has, rr - user_mean, 0.0)
    return feat, group


def build_batch(subgraphs: Sequence[UserSubgraph], requests: Sequence[Request],
                llm_emb: Mapping[str, np.ndarray], reverse_edges: bool = False, emb_dim: int | None = None) -> GraphBatch:
    """Batch users' visible histories and their requests into one HeteroData.

    ``llm_emb`` maps the llm ids of visible turns to description embeddings (unknown ids get zeros).
    """
    d = emb_dim or (requests[0].query_emb.shape[-1] if requests else 384)
    q_rows: list[np.ndarray] = []
    q_node: dict[str, int] = {}
    m_node: dict[str, int] = {}
    t_q, t_m, t_u, t_prev, t_rec, resp, t_grp = [], [], [], [], [], [], []
    offset = 0
    n_groups = 0
    for u, sub in enumerate(subgraphs):
        t = len(sub)
        if t == 0:
            continue
        for i in range(t):
            k = sub.query_keys[i]
            if k not in q_node:
                q_node[k] = len(q_rows)
                q_rows.append(sub.query_emb[i])
            t_q.append(q_node[k])
            t_m.append(m_node.setdefault(sub.llm_ids[i], len(m_node)))
        t_u.append(np.full(t, u, np.int64))
        p = sub.prev.astype(np.int64)
        t_prev.append(np.where(p >= 0, p + offset, -1))
        age = (t - 1 - np.arange(t)).astype(np.float32)
        t_rec.append(np.stack([np.exp(-age / RECENCY_TURNS), age / 100.0], axis=1))
        feat, grp = _response_features(sub)
        resp.append(feat)
        t_grp.append(grp + n_groups)
        n_groups += int(grp.max()) + 1
        offset += t
    n_turn = offset
    data = HeteroData()
    zero = np.zeros(d, np.float32)
    llm_rows = [np.asarray(llm_emb.get(m, zero), np.float32) for m in m_node]
    data["user"].x = torch.zeros(len(subgraphs), 1)
    data["query"].x = torch.from_numpy(np.stack(q_rows)) if q_rows else torch.zeros(0, d)
    data["llm"].x = torch.from_numpy(np.stack(llm_rows)) if llm_rows else torch.zeros(0, d)
    data["response"].x = torch.from_numpy(np.concatenate(resp)) if resp else torch.zeros(0, RESPONSE_FEATURES)
    data["turn"].x = torch.from_numpy(np.concatenate(t_rec)) if t_rec else torch.zeros(0, TURN_FEATURES)
    data["turn"].group = torch.from_numpy(np.concatenate(t_grp)) if t_grp else torch.zeros(0, dtype=torch.long)
    tq = torch.tensor(t_q, dtype=torch.long)
    tm = torch.tensor(t_m, dtype=torch.long)
    tu = torch.from_numpy(np.concatenate(t_u)) if t_u else torch.zeros(0, dtype=torch.long)
    tp = torch.from_numpy(np.concatenate(t_prev)) if t_prev else torch.zeros(0, dtype=torch.long)
    ar = torch.arange(n_turn)
    data["turn"].query_idx = tq
    data["turn"].llm_idx = tm
    data["turn"].user_idx = tu
    has_prev = tp >= 0
    edges = {
        ("query", "asked_in", "turn"): torch.stack([tq, ar]),
        ("llm", "answered", "turn"): torch.stack([tm, ar]),
        ("response", "answer_of", "turn"): torch.stack([ar, ar]),
        ("turn", "by", "user"): torch.stack([ar, tu]),
        ("turn", "follows", "turn"): torch.stack([ar[has_prev], tp[has_prev]]),
    }
    if reverse_edges:
        edges[("user", "rev_by", "turn")] = torch.stack([tu, ar])
        edges[("turn", "rev_follows", "turn")] = torch.stack([tp[has_prev], ar[has_prev]])
    for et, ei in edges.items():
        data[et].edge_index = ei

    # request side
    counts = [len(r.candidates) for r in requests]
    cand = np.concatenate([r.candidates for r in requests]).astype(np.float32) if requests else np.zeros((0, d), np.float32)
    cand_req = np.repeat(np.arange(len(requests)), counts)
    # memory pairs: each candidate x each rated visible turn of its user
    user_turns: dict[int, np.ndarray] = {}
    start = 0
    for u, sub in enumerate(subgraphs):
        t = len(sub)
        rated = np.flatnonzero(~np.isnan(sub.rating)) if t else np.zeros(0, np.int64)
        user_turns[u] = rated + start
        start += t
    mc, mt = [], []
    c0 = 0
    for r, c in zip(requests, counts):
        turns = user_turns[r.user]
        if len(turns) and c:
            mc.append(np.repeat(np.arange(c0, c0 + c), len(turns)))
            mt.append(np.tile(turns, c))
        c0 += c
    seen: dict[bytes, int] = {}
    inv = np.array([seen.setdefault(row.tobytes(), len(seen)) for row in cand], np.int64)
    first = np.zeros(len(seen), np.int64)
    first[inv[::-1]] = np.arange(len(inv))[::-1]  # first occurrence of each distinct row
    uniq = cand[first] if len(cand) else cand
    return GraphBatch(
        cand_unique=torch.from_numpy(np.ascontiguousarray(uniq)),
        cand_inv=torch.from_numpy(inv.reshape(-1).astype(np.int64)),
        data=data,
        query=torch.from_numpy(np.stack([r.query_emb for r in requests]).astype(np.float32)) if requests else torch.zeros(0, d),
        req_user=torch.tensor([r.user for r in requests], dtype=torch.long),
        cand=torch.from_numpy(cand),
        cand_req=torch.from_numpy(cand_req).long(),
        mem_cand=torch.from_numpy(np.concatenate(mc)).long() if mc else torch.zeros(0, dtype=torch.long),
        mem_turn=torch.from_numpy(np.concatenate(mt)).long() if mt else torch.zeros(0, dtype=torch.long),
        counts=counts,
    )
