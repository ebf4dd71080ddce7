"""How consistent a user's own comparisons are, measured on the comparisons a request cannot be judged by.

A noisy rater and a rater whose taste drifted both need their evidence weighed differently from a steady one
(average more widely; trust the recent more), and nothing blind to ratings tells them apart. These statistics
read ratings, but only those of comparisons that involve none of the request's candidate LLMs. So a comparison
"A beat B", or any rating of A or B, cannot move them for a request that weighs A against B, and the evidence
weights they shift keep the sign guarantee of trainer/model.py (a comparison of C and D may move them; it could
already move the A-B decision through the posterior's shared features).

Per request, over its user's kept comparisons (two-answer pairs of one comparison with different ratings):

    n     = number of kept pairs
    loo   = share of kept pairs whose winner the user's other kept comparisons predict (leave one comparison
            out; each LLM's net wins / (games + 1)), shrunk towards 1/2 by one pseudo-pair each way
    preq  = the same, each pair predicted only from the kept comparisons before it (prequential)

A steady user has both high; a noisy one both near 1/2; a drifting one has ``preq`` below ``loo``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: Columns of :func:`consistency_features`: log(1 + n) / 4, 8 (loo - 1/2), 8 (preq - 1/2). The factor 8 makes
#: users whose agreement differs by a quarter differ by 2 at a zero-initialised gate (as the structure input).
CONSISTENCY_FEATURES = 3


def _agreement(pred: np.ndarray) -> np.ndarray:
    """[..] 1 where the predicted margin of the winner over the loser is positive, 1/2 at 0, else 0."""
    return (pred > 0) + 0.5 * (pred == 0)


def _user_stats(win: np.ndarray, lose: np.ndarray, grp: np.ndarray, n_group: int, n_llm: int,
                group_llms: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """[R, 3] the features for R requests of one user.

    win, lose, grp [P]: each tie-free pair's winning and losing LLM (0..n_llm-1) and comparison (0..n_group-1,
    in time order); group_llms [n_group, n_llm] bool: the LLMs of each comparison; cand [R, n_llm] bool: each
    request's candidates."""
    r = cand.shape[0]
    out = np.zeros((r, CONSISTENCY_FEATURES), np.float32)
    if len(win) == 0:  # no evidence: n = 0 and both agreements at 1/2
        return out
    net = np.zeros((n_group, n_llm))  # [G, M] each comparison's net wins per LLM
    games = np.zeros((n_group, n_llm))
    np.add.at(net, (grp, win), 1.0)
    np.add.at(net, (grp, lose), -1.0)
    np.add.at(games, (grp, win), 1.0)
    np.add.at(games, (grp, lose), 1.0)
    keep = ~(group_llms[None, :, :] & cand[:, None, :]).any(-1)  # [R, G] comparisons free of the candidates
    k_net, k_games = keep[:, :, None] * net[None], keep[:, :, None] * games[None]  # [R, G, M]
    tot_net, tot_games = k_net.sum(1), k_games.sum(1)  # [R, M]
    before_net = np.cumsum(k_net, 1) - k_net  # [R, G, M] kept comparisons strictly before each one
    before_games = np.cumsum(k_games, 1) - k_games
    loo_rate = (tot_net[:, None] - k_net) / (tot_games[:, None] - k_games + 1.0)  # [R, G, M]
    pre_rate = before_net / (before_games + 1.0)
    rows = np.arange(r)[:, None]
    kept = keep[:, grp]  # [R, P]
    loo = _agreement(loo_rate[rows, grp, win] - loo_rate[rows, grp, lose])  # [R, P]
    pre = _agreement(pre_rate[rows, grp, win] - pre_rate[rows, grp, lose])
    n = kept.sum(1)  # [R]
    out[:, 0] = np.log1p(n) / 4.0
    out[:, 1] = 8.0 * ((np.where(kept, loo, 0.0).sum(1) + 1.0) / (n + 2.0) - 0.5)
    out[:, 2] = 8.0 * ((np.where(kept, pre, 0.0).sum(1) + 1.0) / (n + 2.0) - 0.5)
    return out


def _by_key(keys: np.ndarray, n: int) -> list[np.ndarray]:
    """[n] the positions of each key 0..n-1 in ``keys`` (one stable sort, not one scan per key)."""
    order = np.argsort(keys, kind="stable")
    return np.split(order, np.searchsorted(keys[order], np.arange(1, n)))


def consistency_features(req_user: np.ndarray, cand_req: np.ndarray, cand_ids: Sequence[str | None],
                         turn_user: np.ndarray, turn_llm: Sequence[str], group: np.ndarray, centered: np.ndarray,
                         pairs: np.ndarray) -> np.ndarray:
    """[B, CONSISTENCY_FEATURES] for B requests (module docstring).

    req_user [B] user node of each request; cand_req [N_c] request of each candidate; cand_ids [N_c] their llm
    ids (None: unknown, excludes nothing); turn_user [T], turn_llm [T], group [T] (comparison, numbered in time
    order within a user), centered [T] centered rating of each visible turn; pairs [2, P] rated turn pairs of one
    comparison (:func:`trainer.graph.rated_pairs`)."""
    n_req = len(req_user)
    out = np.zeros((n_req, CONSISTENCY_FEATURES), np.float32)
    if n_req == 0 or len(turn_user) == 0:
        return out
    llm_of = {m: k for k, m in enumerate(dict.fromkeys(list(turn_llm)))}  # llm id -> column
    n_llm = len(llm_of)
    t_llm = np.array([llm_of[m] for m in turn_llm], np.int64)  # [T]
    c_llm = np.array([llm_of.get(m, -1) if m is not None else -1 for m in cand_ids], np.int64)  # [N_c], -1: none
    i, j = pairs
    d = centered[i] - centered[j]  # [P]
    ok = d != 0
    i, j, d = i[ok], j[ok], d[ok]
    win, lose = np.where(d > 0, t_llm[i], t_llm[j]), np.where(d > 0, t_llm[j], t_llm[i])
    n_user = int(max(turn_user.max(), req_user.max())) + 1
    turns_of, pairs_of, reqs_of = (_by_key(k, n_user) for k in (turn_user, turn_user[i], req_user))
    cands_of = _by_key(cand_req, n_req)
    for u in np.unique(req_user).tolist():
        reqs, turns = reqs_of[u], turns_of[u]  # [R], [T_u]
        if len(turns) == 0:
            continue
        cand = np.zeros((len(reqs), n_llm + 1), bool)  # the last column catches candidates with no history
        for row, rq in enumerate(reqs.tolist()):
            cand[row, c_llm[cands_of[rq]]] = True
        g0 = int(group[turns].min())
        n_group = int(group[turns].max()) - g0 + 1
        group_llms = np.zeros((n_group, n_llm), bool)
        group_llms[group[turns] - g0, t_llm[turns]] = True
        mine = pairs_of[u]
        out[reqs] = _user_stats(win[mine], lose[mine], group[i[mine]] - g0, n_group, n_llm, group_llms,
                                cand[:, :n_llm])
    return out
