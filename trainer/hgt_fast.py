"""PyG's ``HGTConv`` forward, computed with a few batched ops per edge type.

Same parameters, same math, same result (tests/trainer/test_hgt_fast.py compares both on random graphs and
weights). Why: without pyg-lib, ``HGTConv`` applies its per-(edge type, head) relation matrices with a
Python loop over ``heads x edge types`` slices, plus ``MessagePassing``'s generic machinery; on the small
graphs of a serving micro-batch that is mostly op overhead (4.7 ms per layer for one user's 35-node graph).
Here each relation is one ``einsum`` over all heads (bench/results/hgt_layer.md), and only what the caller
asks for is computed: ``out_types`` names the destination types wanted (the last layer of an encoder that
returns user states needs no turn outputs), so keys go only to source types, queries only to destinations,
and the many one-edge-per-node gathers of a turn graph (``arange`` indices) are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import HGTConv
from torch_geometric.utils import softmax

EdgeType = tuple[str, str, str]


def _take(x: Tensor, idx: Tensor) -> Tensor:
    """``x[idx]``, without the copy when ``idx`` is ``0..len(x)-1``."""
    n = x.size(0)
    if idx.numel() == n and (n == 0 or (int(idx[0]) == 0 and int(idx[-1]) == n - 1
                                        and torch.equal(idx, torch.arange(n)))):
        return x
    return x[idx]


def hgt_forward(conv: HGTConv, x_dict: dict[str, Tensor], edge_index_dict: dict[EdgeType, Tensor],
                out_types: Iterable[str] | None = None) -> dict[str, Tensor]:
    """``conv(x_dict, edge_index_dict)`` for an ``HGTConv`` with plain ``[2, E]`` edge indices.

    x_dict: node type -> [N_t, F_in]; edge_index_dict: (src, rel, dst) -> [2, E] (row 0 source, row 1
    destination). Returns dst node type -> [N_t, F] for every node type that can receive messages, is present
    in ``x_dict`` (as ``HGTConv`` does) and is in ``out_types`` (all of them when None).
    """
    H = conv.heads
    Fo = conv.out_channels
    D = Fo // H
    n_rel = len(conv.edge_types)
    want = {t for t in x_dict if t in conv.dst_node_types and (out_types is None or t in out_types)}
    edges = {et: ei for et, ei in edge_index_dict.items() if et[2] in want}
    sources = {et[0] for et in edges}

    # kqv_lin.lins[t] maps to [k | q | v] (each F wide): compute only the slices that are used
    k, q, v = {}, {}, {}
    for t in sources | want:
        lin = conv.kqv_lin.lins[t]
        w, b = lin.weight, lin.bias
        if t in sources and t in want:
            kt, qt, vt = torch.tensor_split(lin(x_dict[t]), 3, dim=1)  # each [N_t, F]
            k[t], q[t], v[t] = kt.view(-1, H, D), qt.view(-1, H, D), vt.view(-1, H, D)
        elif t in sources:
            kt, vt = torch.tensor_split(F.linear(x_dict[t], torch.cat([w[:Fo], w[2 * Fo:]]),
                                                 torch.cat([b[:Fo], b[2 * Fo:]])), 2, dim=1)
            k[t], v[t] = kt.view(-1, H, D), vt.view(-1, H, D)
        else:
            q[t] = F.linear(x_dict[t], w[Fo:2 * Fo], b[Fo:2 * Fo]).view(-1, H, D)

    # relation matrices: HeteroLinear type h * n_rel + e holds head h of edge type e -> [n_rel, H, D, D]
    wk = conv.k_rel.weight.view(H, n_rel, D, D).transpose(0, 1)
    wv = conv.v_rel.weight.view(H, n_rel, D, D).transpose(0, 1)

    # attention logits and values per edge, grouped by destination type (softmax runs over all of a node's
    # incoming edges, whatever their type)
    logits: dict[str, list[Tensor]] = {}
    values: dict[str, list[Tensor]] = {}
    index: dict[str, list[Tensor]] = {}
    for et, ei in edges.items():
        src, _, dst = et
        e = conv.edge_types_map[et]
        src_idx, dst_idx = ei[0], ei[1]
        k_e = _take(torch.einsum("nhd,hde->nhe", k[src], wk[e]), src_idx)  # [E, H, D]
        v_e = _take(torch.einsum("nhd,hde->nhe", v[src], wv[e]), src_idx)  # [E, H, D]
        a = (_take(q[dst], dst_idx) * k_e).sum(-1) * conv.p_rel["__".join(et)]  # [E, H]
        logits.setdefault(dst, []).append(a / math.sqrt(D))
        values.setdefault(dst, []).append(v_e)
        index.setdefault(dst, []).append(dst_idx)

    out: dict[str, Tensor] = {}
    for t in x_dict:
        if t not in want:
            continue
        n = x_dict[t].size(0)
        agg = x_dict[t].new_zeros(n, H, D)
        if t in logits:
            idx = torch.cat(index[t])
            alpha = softmax(torch.cat(logits[t]), idx, num_nodes=n)  # [E_t, H]
            agg = agg.index_add_(0, idx, torch.cat(values[t]) * alpha.unsqueeze(-1))
        a = conv.out_lin.lins[t](F.gelu(agg.view(n, Fo)))  # [N_t, F]
        if a.size(-1) == x_dict[t].size(-1):
            s = conv.skip[t].sigmoid()
            a = s * a + (1 - s) * x_dict[t]
        out[t] = a
    return out
