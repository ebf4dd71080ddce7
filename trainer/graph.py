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


def _response_features(rating: np.ndarray, group: np.ndarray, user: np.ndarray, n_user: int) -> np.ndarray:
    """[T, RESPONSE_FEATURES] feedback as the model sees it (unrated turns: zeros but the raw slot).

    rating [T] (NaN = none), group [T] the comparison of each turn (turns of one user sharing conversation
    and turn index), user [T] its user. Computed for the whole batch at once: a Python loop per user was
    most of the builder's time on 64-request serving batches."""
    t = len(rating)
    feat = np.zeros((t, RESPONSE_FEATURES), np.float32)
    if t == 0:
        return feat
    has = ~np.isnan(rating)
    rr = np.where(has, rating, np.float32(0.5)).astype(np.float32)
    w = has.astype(np.float64)
    n_rated = np.bincount(group, weights=w)
    group_mean = np.bincount(group, weights=rr * w) / np.maximum(n_rated, 1.0)
    compared = has & (n_rated[group] >= 2)  # a rated turn with a rated sibling answer
    feat[:, 0] = np.where(compared, rr - group_mean[group], 0.0)
    feat[:, 3] = compared
    u_rated = np.bincount(user, weights=w, minlength=n_user)
    user_mean = np.where(u_rated > 0, np.bincount(user, weights=rr * w, minlength=n_user) / np.maximum(u_rated, 1.0),
                         0.5)
    feat[:, 1] = has
    feat[:, 2] = rr
    feat[:, 4] = np.where(has, rr - user_mean[user], 0.0)
    return feat


def _index(keys: Sequence) -> tuple[np.ndarray, list[int]]:
    """Node number of each key (in order of first appearance) and the position of each node's first key."""
    node = dict.fromkeys(keys)  # distinct keys in order, in C
    for i, k in enumerate(node):
        node[k] = i
    idx = np.array(list(map(node.__getitem__, keys)), np.int64)
    first = np.zeros(len(node), np.int64)
    first[idx[::-1]] = np.arange(len(idx))[::-1]
    return idx, first.tolist()


def build_batch(subgraphs: Sequence[UserSubgraph], requests: Sequence[Request],
                llm_emb: Mapping[str, np.ndarray], reverse_edges: bool = False, emb_dim: int | None = None) -> GraphBatch:
    """Batch users' visible histories and their requests into one HeteroData.

    ``llm_emb`` maps the llm ids of visible turns to description embeddings (unknown ids get zeros).
    """
    d = emb_dim or (requests[0].query_emb.shape[-1] if requests else 384)
    subs = [s for s in subgraphs if len(s)]
    lens = np.array([len(s) for s in subgraphs], np.int64)  # [U] turns per user
    n_user, n_turn = len(subgraphs), int(lens.sum())
    starts = np.cumsum(lens) - lens  # [U] first turn of each user
    tu = np.repeat(np.arange(n_user), lens)  # [T] user of each turn
    pos = np.arange(n_turn) - starts[tu]  # [T] position within its user's turns (oldest = 0)

    def cat(field: str) -> list:
        return [x for s in subs for x in getattr(s, field)]

    q_keys, llm_ids = cat("query_keys"), cat("llm_ids")
    t_q, q_first = _index(q_keys)
    t_m, m_first = _index(llm_ids)
    group, _ = _index(list(zip(tu.tolist(), cat("conversation_ids"),
                               np.concatenate([s.turn_index for s in subs]).tolist() if subs else [])))
    prev = np.concatenate([s.prev for s in subs]).astype(np.int64) if subs else np.zeros(0, np.int64)
    prev = np.where(prev >= 0, prev + starts[tu], -1)
    rating = np.concatenate([s.rating for s in subs]).astype(np.float32) if subs else np.zeros(0, np.float32)
    age = (lens[tu] - 1 - pos).astype(np.float32)  # in turns from the user's newest

    data = HeteroData()
    zero = np.zeros(d, np.float32)
    data["user"].x = torch.zeros(n_user, 1)
    if subs:
        q_all = np.concatenate([s.query_emb for s in subs])
        data["query"].x = torch.from_numpy(np.ascontiguousarray(q_all[q_first], np.float32))
    else:
        data["query"].x = torch.zeros(0, d)
    llm_rows = [np.asarray(llm_emb.get(llm_ids[i], zero), np.float32) for i in m_first]
    data["llm"].x = torch.from_numpy(np.stack(llm_rows)) if llm_rows else torch.zeros(0, d)
    data["response"].x = torch.from_numpy(_response_features(rating, group, tu, n_user))
    data["turn"].x = torch.from_numpy(np.stack([np.exp(-age / RECENCY_TURNS), age / 100.0], axis=1).astype(np.float32))
    data["turn"].group = torch.from_numpy(group)
    tq, tm, tu_t, tp = (torch.from_numpy(a) for a in (t_q, t_m, tu, prev))
    ar = torch.arange(n_turn)
    data["turn"].query_idx = tq
    data["turn"].llm_idx = tm
    data["turn"].user_idx = tu_t
    has_prev = tp >= 0
    edges = {
        ("query", "asked_in", "turn"): torch.stack([tq, ar]),
        ("llm", "answered", "turn"): torch.stack([tm, ar]),
        ("response", "answer_of", "turn"): torch.stack([ar, ar]),
        ("turn", "by", "user"): torch.stack([ar, tu_t]),
        ("turn", "follows", "turn"): torch.stack([ar[has_prev], tp[has_prev]]),
    }
    if reverse_edges:
        edges[("user", "rev_by", "turn")] = torch.stack([tu_t, ar])
        edges[("turn", "rev_follows", "turn")] = torch.stack([tp[has_prev], ar[has_prev]])
    for et, ei in edges.items():
        data[et].edge_index = ei

    # request side
    counts = [len(r.candidates) for r in requests]
    cand = np.concatenate([r.candidates for r in requests]).astype(np.float32) if requests else np.zeros((0, d), np.float32)
    cand_req = np.repeat(np.arange(len(requests)), counts)
    # memory pairs: each candidate x each rated visible turn of its user
    rated = np.flatnonzero(~np.isnan(rating))  # [R] rated turns, grouped by user (turns are)
    n_rated = np.bincount(tu[rated], minlength=n_user)  # [U]
    req_user = np.array([r.user for r in requests], np.int64)
    cu = req_user[cand_req]  # [N_c] user of each candidate
    per_cand = n_rated[cu] if len(cu) else np.zeros(0, np.int64)
    mem_cand = np.repeat(np.arange(len(cand)), per_cand)  # [P] candidate-major: each candidate, then its turns
    within = np.arange(len(mem_cand)) - np.repeat(np.cumsum(per_cand) - per_cand, per_cand)
    mem_turn = rated[np.repeat((np.cumsum(n_rated) - n_rated)[cu], per_cand) + within] if len(mem_cand) else mem_cand
    inv, first = _index([row.tobytes() for row in cand])
    uniq = cand[first] if len(cand) else cand
    return GraphBatch(
        cand_unique=torch.from_numpy(np.ascontiguousarray(uniq)),
        cand_inv=torch.from_numpy(inv),
        data=data,
        query=torch.from_numpy(np.stack([r.query_emb for r in requests]).astype(np.float32)) if requests else torch.zeros(0, d),
        req_user=torch.from_numpy(req_user),
        cand=torch.from_numpy(cand),
        cand_req=torch.from_numpy(cand_req).long(),
        mem_cand=torch.from_numpy(mem_cand),
        mem_turn=torch.from_numpy(mem_turn.astype(np.int64)),
        counts=counts,
    )
