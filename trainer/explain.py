"""Why a decision: how much each of the user's own feedback moved each candidate's score.

The personal part of a score is a sum over the user's rated turns, exactly:
- posterior: at the MAP, prec * w_u = sum_p om_p (y_p - sigmoid(z_p)) x_p, so <phi_c, w_u> splits into one
  term per rated pair p (credited half to each of its two turns; with the robust prior, prec is its effective
  precision at w_u);
- memory, counts and levels: a * 4 * sum_t s_t r_t / (sum_t s_t + prior), one term per rated turn of the
  candidate's LLM (counts: s_t = 1, every past query alike; levels: s_t the recency weight, r_t the rating minus
  a constant and, with ``level_leniency``, minus a share of the user's own level over all their rated turns);
- conversation: a_conv * 4 * the candidate's centered rating on the previous turn of this conversation.
The weights a_* are the user's own when the model has per-user gates (GMTRouter.gates: rating-blind).
``explain`` returns, per request, the personal term of each candidate and the turns that pushed the chosen
candidate most (``prefstream audit USER --decision ID`` prints them), and, for a model with the crowd term,
each candidate's crowd term (other users' ratings on this query: not the user's own, so not in ``personal``).
"""

from __future__ import annotations

from collections import defaultdict
from itertools import accumulate
from typing import Iterable, Sequence

import numpy as np
import torch
from torch_geometric.utils import scatter

from trainer.graph import GraphBatch
from trainer.model import GMTRouter

TOP_TURNS = 5


@torch.no_grad()
def pushes(model: GMTRouter, b: GraphBatch, kept: dict | None = None,
           only: Iterable[int] | None = None) -> tuple[np.ndarray, dict[int, dict[int, float]]]:
    """(personal [N_c], {candidate: {turn node: push}}) for a batch, in score units. ``kept``: the intermediates
    the model's forward kept for this batch (``model(b, keep=kept)``); without them, the model runs again.
    ``only``: the candidates whose per-turn pushes are wanted (default: all); the totals cover every candidate
    (vectorized: a serving batch only needs the turns behind each request's chosen candidate)."""
    data, turn = b.data, b.data["turn"]
    n_c = b.cand.size(0)
    out: dict[int, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    if turn.num_nodes == 0:
        return np.zeros(n_c, np.float64), {}
    if not kept or "evidence_weights" not in kept or (model.cfg.personal and "w" not in kept):
        kept = {}
        model(b, keep=kept)
    want = sorted(set(range(n_c) if only is None else only))
    cand_user = b.req_user[b.cand_req]
    total = torch.zeros(n_c, dtype=torch.float64)
    if model.cfg.personal and turn.pair_index.size(1):
        phi_t, g_t, phi_c, w = kept["phi_t"], kept["g_t"], kept["phi_c"], kept["w"]
        rating, age = data["response"].x[:, 2], turn.x[:, 1] * 100.0
        i, j, coef, x = model.pref.pair_terms(phi_t, g_t, rating, age, turn.pair_index, w[turn.user_idx[turn.pair_index[0]]])
        pair_user = turn.user_idx[i]
        prec = model.pref.effective_precision(w, kept["prec"])  # [U, F] (the prior's own for a Gaussian prior)
        scaled = coef[:, None] * x / prec[pair_user]  # [P, F] each pair's share of prec * w, / prec
        per_user = scatter(scaled, pair_user, 0, dim_size=data["user"].num_nodes, reduce="sum")  # [U, F]
        total += (per_user[cand_user] * phi_c).sum(-1).double()  # [N_c] = <phi_c, w_u>
        for c in want:  # each with its own user's few pairs
            mine = (pair_user == cand_user[c]).nonzero().flatten()
            if mine.numel() == 0:
                continue
            push = (scaled[mine] @ phi_c[c]).tolist()
            for a, bb, p in zip(i[mine].tolist(), j[mine].tolist(), push):
                out[c][a] += p / 2
                out[c][bb] += p / 2
    weights = kept["evidence_weights"]  # [N_c, n_terms] each candidate's user's weight of each evidence term
    wanted = torch.zeros(n_c, dtype=torch.bool)
    wanted[want] = True
    mem_space = model.memory_space(kept["t_req"], kept["t_graph"])  # the counts and levels weigh every query alike
    for k, mem, space in ((0, model.memory, mem_space), (1, model.counts, ()), (4, model.levels, ())):
        if mem is not None and b.mem_cand.numel():
            share = weights[b.mem_cand, k] * mem.terms(b, *space)  # [P] each (candidate, turn)'s push
            total += scatter(share, b.mem_cand, 0, dim_size=n_c, reduce="sum").double()
            sel = wanted[b.mem_cand]
            for c, t, v in zip(b.mem_cand[sel].tolist(), b.mem_turn[sel].tolist(), share[sel].tolist()):
                out[c][t] += v
    if model.conv_weight is not None and b.conv_prev is not None:  # not attributed to a turn id
        total += (weights[:, 2] * b.conv_prev).double()
    return total.numpy(), out


def explain(model: GMTRouter, b: GraphBatch, turn_ids: Sequence[str], chosen: Sequence[int],
            kept: dict | None = None) -> list[dict]:
    """Per request: {"personal": {candidate position: term}, "pushed_by": [{"turn_id", "push"}]} where
    ``pushed_by`` lists the turns that moved the chosen candidate (``chosen[r]``, a position in the request's
    candidates) most, by absolute push. ``turn_ids``: the batch's turn nodes' ids, in node order; ``kept``: see
    ``pushes``."""
    if not kept or "evidence_weights" not in kept:
        kept = {}
        with torch.no_grad():
            model(b, keep=kept)
    starts = list(accumulate(b.counts, initial=0))[:-1]  # each request's first candidate
    picked = [off + chosen[r] for r, off in enumerate(starts)]  # each request's chosen candidate
    total, per = pushes(model, b, kept, only=picked)
    crowd = kept["terms"].get("crowd")  # [N_c] the forward pass's own crowd term, when the model has one
    crowd = None if crowd is None else crowd.detach().numpy()
    out = []
    for off, n, c in zip(starts, b.counts, picked):
        top = sorted(per.get(c, {}).items(), key=lambda kv: -abs(kv[1]))[:TOP_TURNS]
        out.append({"personal": [round(float(v), 4) for v in total[off:off + n]],
                    "pushed_by": [{"turn_id": turn_ids[t], "push": round(float(v), 4)} for t, v in top]})
        if crowd is not None:
            out[-1]["crowd"] = [round(float(v), 4) for v in crowd[off:off + n]]
    return out
