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

from graphstore.schema import EDGE_TYPES, NODE_TYPES, LLMInfo, UserSubgraph
from trainer.config import LLM_PRICE_FEATURES

#: Response node features: centered rating within its comparison, has rating, raw rating,
#: has a rated sibling answer, deviation from the user's mean rating.
RESPONSE_FEATURES = 5
#: Reverse edges (optional, see GMTRouterConfig.reverse_edges): user -> turn, previous turn -> next turn.
REVERSE_EDGE_TYPES: tuple[tuple[str, str, str], ...] = (("user", "rev_by", "turn"), ("turn", "rev_follows", "turn"))
RECENCY_TURNS = 6.0  # turn recency feature exp(-age / RECENCY_TURNS), age in turns from the newest
#: Turn node features: recency exp(-age / RECENCY_TURNS) and age / 100 (age in turns, newest = 0).
TURN_FEATURES = 2


def llm_vector(info: LLMInfo, prices: bool = False) -> np.ndarray:
    """The model's input vector of one LLM: its description embedding [D], then with ``prices``
    log(1 + USD per million input tokens) and log(1 + USD per million output tokens) [D + LLM_PRICE_FEATURES]
    (GMTRouterConfig.llm_prices)."""
    if not prices:
        return info.embedding
    price = np.log1p(np.maximum([info.price_in, info.price_out], 0.0)).astype(np.float32)  # [LLM_PRICE_FEATURES]
    return np.concatenate([np.asarray(info.embedding, np.float32), price])


def llm_table(llms: Mapping[str, LLMInfo] | Mapping[str, np.ndarray], prices: bool = False) -> dict[str, np.ndarray]:
    """LLM id -> :func:`llm_vector`; a value that is already a vector is taken as the model's input as it is."""
    return {k: (llm_vector(v, prices) if isinstance(v, LLMInfo) else np.asarray(v)) for k, v in llms.items()}


def metadata(reverse_edges: bool = False) -> tuple[list[str], list[tuple[str, str, str]]]:
    edges = list(EDGE_TYPES) + (list(REVERSE_EDGE_TYPES) if reverse_edges else [])
    return list(NODE_TYPES), edges


@dataclass
class Request:
    """Score ``candidates`` for ``query_emb`` on behalf of subgraph number ``user``."""

    user: int
    query_emb: np.ndarray  # [D]
    candidates: np.ndarray  # [C, D_m] input vectors of the candidate LLMs (llm_vector)
    candidate_ids: list[str] | None = None  # [C] their ids (None: matched to history turns by embedding)
    conversation_id: str | None = None  # the conversation this request continues, if any
    crowd: np.ndarray | None = None  # [C] other users' centred ratings of each candidate on this query (0 if None)


@dataclass
class GraphBatch:
    """A batched graph plus the request-side tensors the scoring head needs.

    B = requests, N_c = all candidates of all requests, P = (candidate, rated visible turn) pairs.
    """

    data: HeteroData
    query: Tensor  # [B, D] request query embeddings
    req_user: Tensor  # [B] user node of each request
    cand: Tensor  # [N_c, D_m] candidate LLM vectors
    cand_req: Tensor  # [N_c] request of each candidate
    mem_cand: Tensor  # [P] candidate index
    mem_turn: Tensor  # [P] turn node index (a rated turn of the candidate's user answered by the same LLM)
    counts: list[int]  # candidates per request, to split scores back
    conv_prev: Tensor | None = None  # [N_c] centered rating of the candidate on the latest visible turn of the
    #                                  request's conversation (0 when it did not answer there or nothing is known)
    cand_unique: Tensor | None = None  # [N_u, D] distinct candidate embeddings (projected once)
    cand_inv: Tensor | None = None  # [N_c] row of cand_unique for each candidate
    crowd: Tensor | None = None  # [N_c] other users' centred ratings of the candidate on the request's query


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


def rated_pairs(group: np.ndarray, rated: np.ndarray) -> np.ndarray:
    """[2, P] turn pairs (i, j), i < j, of one comparison (same group) where both answers are rated."""
    if len(group) < 2:
        return np.zeros((2, 0), np.int64)
    order = np.argsort(group, kind="stable")
    g = group[order]
    out = []
    for d in range(1, int(np.bincount(group).max())):
        i, j = order[:-d], order[d:]
        ok = (g[:-d] == g[d:]) & rated[i] & rated[j]
        out.append(np.stack([np.minimum(i, j)[ok], np.maximum(i, j)[ok]]))
    return np.concatenate(out, axis=1).astype(np.int64) if out else np.zeros((2, 0), np.int64)


def _candidate_ids(requests: Sequence[Request], llm_emb: Mapping[str, np.ndarray]) -> list[str | None]:
    """[N_c] the llm id of every candidate: given, or the catalog id whose embedding it is (None if none)."""
    by_bytes = {np.asarray(v, np.float32).tobytes(): k for k, v in llm_emb.items()}
    out: list[str | None] = []
    for r in requests:
        if r.candidate_ids is not None:
            out += list(r.candidate_ids)
        else:
            out += [by_bytes.get(np.asarray(c, np.float32).tobytes()) for c in r.candidates]
    return out


def _same_llm_pairs(cand_ids: Sequence[str | None], cand_user: np.ndarray, turn_user: np.ndarray,
                    turn_llm: Sequence[str], rating: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[P] (candidate, turn) pairs: every rated visible turn of the candidate's user answered by that LLM."""
    rated: dict[tuple[int, str], list[int]] = {}
    for t in np.flatnonzero(~np.isnan(rating)).tolist():
        rated.setdefault((int(turn_user[t]), turn_llm[t]), []).append(t)
    cs, ts = [], []
    for c, (m, u) in enumerate(zip(cand_ids, cand_user.tolist())):
        turns = rated.get((u, m), ()) if m is not None else ()
        cs += [c] * len(turns)
        ts += turns
    return np.array(cs, np.int64), np.array(ts, np.int64)


def _conversation_evidence(requests: Sequence[Request], cand_ids: Sequence[str | None], turn_user: np.ndarray,
                           turn_conv: Sequence[str], turn_index: np.ndarray, turn_llm: Sequence[str],
                           centered: np.ndarray) -> np.ndarray:
    """[N_c] for a request that continues a conversation: each candidate's centered rating on the latest
    visible turn of that conversation (0 when it did not answer it, or the turn was not compared)."""
    out = np.zeros(len(cand_ids), np.float32)
    if not any(r.conversation_id is not None for r in requests):
        return out
    latest: dict[tuple[int, str], int] = {}  # (user, conversation) -> its latest visible turn index
    answers: dict[tuple[int, str, int], dict[str, float]] = {}  # (user, conversation, turn index) -> llm -> rating
    for t, (u, c, k, m) in enumerate(zip(turn_user.tolist(), turn_conv, turn_index.tolist(), turn_llm)):
        latest[(u, c)] = max(k, latest.get((u, c), k))
        answers.setdefault((u, c, k), {})[m] = float(centered[t])
    off = 0
    for r in requests:
        n = len(r.candidates)
        k = latest.get((r.user, r.conversation_id)) if r.conversation_id is not None else None
        if k is not None:
            score = answers[(r.user, r.conversation_id, k)]
            out[off:off + n] = [score.get(m, 0.0) if m is not None else 0.0 for m in cand_ids[off:off + n]]
        off += n
    return out


def _index(keys: Sequence) -> tuple[np.ndarray, list[int]]:
    """Node number of each key (in order of first appearance) and the position of each node's first key."""
    node = dict.fromkeys(keys)  # distinct keys in order, in C
    for i, k in enumerate(node):
        node[k] = i
    idx = np.array(list(map(node.__getitem__, keys)), np.int64)
    first = np.zeros(len(node), np.int64)
    first[idx[::-1]] = np.arange(len(idx))[::-1]
    return idx, first.tolist()


@dataclass
class _Turns:
    """The visible turns of every subgraph, concatenated in subgraph order (oldest first within each).

    U = subgraphs (one user node each), T = all visible turns, D = encoder width.
    """

    subs: list[UserSubgraph]  # the subgraphs with at least one turn
    n_user: int  # U
    tu: np.ndarray  # [T] user of each turn
    age: np.ndarray  # [T] float32, in turns from the user's newest (newest = 0)
    llm_ids: list[str]  # [T]
    conv_ids: list[str]  # [T]
    turn_index: np.ndarray  # [T]
    prev: np.ndarray  # [T] int64, batch turn number of the previous turn of the conversation, -1 = none
    rating: np.ndarray  # [T] float32, NaN = none
    group: np.ndarray  # [T] the comparison of each turn (same user, conversation and turn index)
    t_q: np.ndarray  # [T] query node of each turn
    q_first: list[int]  # [N_q] first turn of each query node
    t_m: np.ndarray  # [T] llm node of each turn
    m_first: list[int]  # [N_m] first turn of each llm node


def _turn_column(subs: Sequence[UserSubgraph], field: str, dtype) -> np.ndarray:
    """[T] a per-turn array of every subgraph, concatenated (an empty ``dtype`` array when there are none)."""
    return np.concatenate([getattr(s, field) for s in subs]) if subs else np.zeros(0, dtype)


def _concat_turns(subgraphs: Sequence[UserSubgraph]) -> _Turns:
    """Concatenate the turns of ``subgraphs`` and number their query, llm and comparison nodes."""
    subs = [s for s in subgraphs if len(s)]
    lens = np.array([len(s) for s in subgraphs], np.int64)  # [U] turns per user
    n_user, n_turn = len(subgraphs), int(lens.sum())
    starts = np.cumsum(lens) - lens  # [U] first turn of each user
    tu = np.repeat(np.arange(n_user), lens)  # [T] user of each turn
    pos = np.arange(n_turn) - starts[tu]  # [T] position within its user's turns (oldest = 0)

    def cat(field: str) -> list:
        return [x for s in subs for x in getattr(s, field)]

    q_keys, llm_ids, conv_ids = cat("query_keys"), cat("llm_ids"), cat("conversation_ids")
    turn_index = _turn_column(subs, "turn_index", np.int64)  # [T]
    t_q, q_first = _index(q_keys)
    t_m, m_first = _index(llm_ids)
    group, _ = _index(list(zip(tu.tolist(), conv_ids, turn_index.tolist())))
    prev = _turn_column(subs, "prev", np.int64).astype(np.int64)  # [T] index within its own subgraph
    prev = np.where(prev >= 0, prev + starts[tu], -1)  # [T] index within the batch
    rating = _turn_column(subs, "rating", np.float32).astype(np.float32)  # [T]
    age = (lens[tu] - 1 - pos).astype(np.float32)  # [T] in turns from the user's newest
    return _Turns(subs=subs, n_user=n_user, tu=tu, age=age, llm_ids=llm_ids, conv_ids=conv_ids,
                  turn_index=turn_index, prev=prev, rating=rating, group=group, t_q=t_q, q_first=q_first, t_m=t_m,
                  m_first=m_first)


def _set_node_features(data: HeteroData, t: _Turns, llm_emb: Mapping[str, np.ndarray], d: int, d_m: int) -> None:
    """Node features of every node type (in the order HeteroData first sees the types: user, query, llm, ...);
    ``d`` / ``d_m``: the widths of a query's and an LLM's vector."""
    zero = np.zeros(d_m, np.float32)
    data["user"].x = torch.zeros(t.n_user, 1)  # [U, 1]
    if t.subs:
        q_all = np.concatenate([s.query_emb for s in t.subs])  # [T, D]
        data["query"].x = torch.from_numpy(np.ascontiguousarray(q_all[t.q_first], np.float32))  # [N_q, D]
    else:
        data["query"].x = torch.zeros(0, d)
    llm_rows = [np.asarray(llm_emb.get(t.llm_ids[i], zero), np.float32) for i in t.m_first]
    data["llm"].x = torch.from_numpy(np.stack(llm_rows)) if llm_rows else torch.zeros(0, d_m)  # [N_m, D_m]
    response = _response_features(t.rating, t.group, t.tu, t.n_user)  # [T, RESPONSE_FEATURES]
    data["response"].x = torch.from_numpy(response)
    age = t.age
    data["turn"].x = torch.from_numpy(  # [T, TURN_FEATURES]
        np.stack([np.exp(-age / RECENCY_TURNS), age / 100.0], axis=1).astype(np.float32))


def _edge_index(tq: Tensor, tm: Tensor, tu: Tensor, tp: Tensor,
                reverse_edges: bool) -> dict[tuple[str, str, str], Tensor]:
    """[2, E] edge index of every edge type, in the order of EDGE_TYPES (then REVERSE_EDGE_TYPES).

    tq, tm, tu, tp: [T] query node, llm node, user node and previous turn (-1 = none) of each turn."""
    ar = torch.arange(len(tu))  # [T] turn node of each turn
    has_prev = tp >= 0
    by_relation = {  # relation -> [2, E] (src, dst)
        "asked_in": torch.stack([tq, ar]),
        "answered": torch.stack([tm, ar]),
        "answer_of": torch.stack([ar, ar]),
        "by": torch.stack([ar, tu]),
        "follows": torch.stack([ar[has_prev], tp[has_prev]]),
    }
    edges = {et: by_relation[et[1]] for et in EDGE_TYPES}
    if reverse_edges:
        reverse = {"rev_by": torch.stack([tu, ar]), "rev_follows": torch.stack([tp[has_prev], ar[has_prev]])}
        edges.update({et: reverse[et[1]] for et in REVERSE_EDGE_TYPES})
    return edges


def _history_graph(t: _Turns, llm_emb: Mapping[str, np.ndarray], d: int, d_m: int,
                   reverse_edges: bool) -> HeteroData:
    """The visible histories as one HeteroData: node features, turn attributes, edges, rated turn pairs."""
    data = HeteroData()
    _set_node_features(data, t, llm_emb, d, d_m)
    data["turn"].group = torch.from_numpy(t.group)  # [T]
    tq, tm, tu_t, tp = (torch.from_numpy(a) for a in (t.t_q, t.t_m, t.tu, t.prev))  # [T] each
    data["turn"].query_idx = tq
    data["turn"].llm_idx = tm
    data["turn"].user_idx = tu_t
    for et, ei in _edge_index(tq, tm, tu_t, tp, reverse_edges).items():
        data[et].edge_index = ei
    data["turn"].pair_index = torch.from_numpy(rated_pairs(t.group, ~np.isnan(t.rating)))  # [2, P_r]
    return data


def _request_batch(requests: Sequence[Request], llm_emb: Mapping[str, np.ndarray], t: _Turns, data: HeteroData,
                   d: int, d_m: int) -> GraphBatch:
    """The request-side tensors of the batch around the history graph ``data``."""
    counts = [len(r.candidates) for r in requests]
    cand = (np.concatenate([r.candidates for r in requests]).astype(np.float32) if requests
            else np.zeros((0, d_m), np.float32))  # [N_c, D_m]
    cand_req = np.repeat(np.arange(len(requests)), counts)  # [N_c]
    req_user = np.array([r.user for r in requests], np.int64)  # [B]
    cand_ids = _candidate_ids(requests, llm_emb)  # [N_c]
    mem_cand, mem_turn = _same_llm_pairs(cand_ids, req_user[cand_req] if len(cand_req) else cand_req, t.tu, t.llm_ids,
                                         t.rating)  # [P] each
    centered = data["response"].x[:, 0].numpy()  # [T]
    conv_prev = _conversation_evidence(requests, cand_ids, t.tu, t.conv_ids, t.turn_index, t.llm_ids,
                                       centered)  # [N_c]
    crowd = np.concatenate([np.asarray(r.crowd, np.float32) if r.crowd is not None else np.zeros(n, np.float32)
                            for r, n in zip(requests, counts)]) if requests else np.zeros(0, np.float32)  # [N_c]
    inv, first = _index([row.tobytes() for row in cand])  # [N_c], [N_u]
    uniq = cand[first] if len(cand) else cand  # [N_u, D]
    return GraphBatch(
        cand_unique=torch.from_numpy(np.ascontiguousarray(uniq)),
        cand_inv=torch.from_numpy(inv),
        data=data,
        query=torch.from_numpy(np.stack([r.query_emb for r in requests]).astype(np.float32)) if requests else torch.zeros(0, d),
        req_user=torch.from_numpy(req_user),
        cand=torch.from_numpy(cand),
        cand_req=torch.from_numpy(cand_req).long(),
        mem_cand=torch.from_numpy(mem_cand),
        mem_turn=torch.from_numpy(mem_turn),
        counts=counts,
        conv_prev=torch.from_numpy(conv_prev),
        crowd=torch.from_numpy(crowd),
    )


def build_batch(subgraphs: Sequence[UserSubgraph], requests: Sequence[Request],
                llm_emb: Mapping[str, np.ndarray], reverse_edges: bool = False, emb_dim: int | None = None,
                llm_dim: int | None = None) -> GraphBatch:
    """Batch users' visible histories and their requests into one HeteroData.

    ``llm_emb`` maps the llm ids of visible turns to the LLMs' input vectors (:func:`llm_table`; unknown ids get
    zeros). ``emb_dim`` / ``llm_dim``: the widths of a query's and an LLM's vector, for empty batches (by default
    the first request's query and the table's first vector, else 384).
    """
    d = emb_dim or (requests[0].query_emb.shape[-1] if requests else 384)
    d_m = llm_dim or (next(iter(llm_emb.values())).shape[-1] if llm_emb else d)
    turns = _concat_turns(subgraphs)
    data = _history_graph(turns, llm_emb, d, d_m, reverse_edges)
    return _request_batch(requests, llm_emb, turns, data, d, d_m)
