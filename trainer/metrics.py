"""Pairwise metrics shared by the model and every baseline, so all are measured the same way."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from graphstore.schema import HeldOutGroup


def pairs(group: HeldOutGroup) -> list[tuple[int, int]]:
    """Unordered pairs (i, j), i < j in llm-id order, with unequal ratings (ties are skipped)."""
    order = sorted(range(len(group.llm_ids)), key=lambda i: group.llm_ids[i])
    return [(a, b) for x, a in enumerate(order) for b in order[x + 1:] if group.ratings[a] != group.ratings[b]]


def pair_metrics(groups: Sequence[HeldOutGroup], scores: Sequence[np.ndarray]) -> dict:
    """Accuracy, ROC-AUC of the score difference, mean per-user AUC, top-1 accuracy on K>2 groups.

    Pairs are oriented by llm id (not by the label), so both classes occur and AUC is meaningful.
    """
    labels, diffs, users = [], [], []
    top1 = []
    for g, s in zip(groups, scores):
        s = np.asarray(s, dtype=np.float64)
        for a, b in pairs(g):
            labels.append(g.ratings[a] > g.ratings[b])
            diffs.append(s[a] - s[b])
            users.append(g.user_id)
        if len(g.llm_ids) > 2 and (g.ratings == g.ratings.max()).sum() == 1:
            top1.append(int(np.argmax(s)) == int(np.argmax(g.ratings)))
    y = np.array(labels, bool)
    d = np.array(diffs, np.float64)
    if len(y) == 0:
        return {"pairs": 0, "accuracy": float("nan"), "auc": float("nan"), "user_auc": float("nan")}
    acc = float(np.mean(pair_correct(d, y)))
    auc = float(roc_auc_score(y, d)) if 0 < y.sum() < len(y) else float("nan")
    by_user: dict[str, list[int]] = defaultdict(list)
    for i, u in enumerate(users):
        by_user[u].append(i)
    uaucs = [roc_auc_score(y[idx], d[idx]) for idx in by_user.values() if 0 < y[idx].sum() < len(idx)]
    return {"pairs": int(len(y)), "accuracy": acc, "auc": auc,
            "user_auc": float(np.mean(uaucs)) if uaucs else float("nan"),
            "top1": float(np.mean(top1)) if top1 else float("nan")}


def pair_correct(diff: np.ndarray, label: np.ndarray) -> np.ndarray:
    """[N] 1 where the score difference orders a pair as its label does, 0.5 on a tied score, else 0
    (``pair_metrics``' accuracy is the mean of this)."""
    d = np.asarray(diff, np.float64)
    return np.where(d == 0, 0.5, ((d > 0) == np.asarray(label, bool)).astype(np.float64))


def user_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, users: Sequence[str], n_boot: int = 2000,
                   seed: int = 0) -> dict:
    """Accuracy difference a - b over pairs, with a 95 % interval from resampling whole users (a user's pairs
    are not independent: they share the user's taste and history).

    correct_a, correct_b [N] per-pair correctness (``pair_correct``) of two methods on the same pairs; users [N].
    Returns {"diff", "low", "high", "p_above_0", "users", "pairs"}; differences are in accuracy units.
    """
    keys, inv = np.unique(np.asarray(users), return_inverse=True)
    n_u = len(keys)
    if n_u == 0:
        return {"diff": float("nan"), "low": float("nan"), "high": float("nan"), "p_above_0": float("nan"),
                "users": 0, "pairs": 0}
    d = np.bincount(inv, weights=np.asarray(correct_a, np.float64) - np.asarray(correct_b, np.float64),
                    minlength=n_u)  # [U] summed per-pair differences
    n = np.bincount(inv, minlength=n_u).astype(np.float64)  # [U] pairs
    w = np.random.default_rng(seed).multinomial(n_u, np.full(n_u, 1.0 / n_u), size=n_boot)  # [B, U] draws
    boot = (w @ d) / np.maximum(w @ n, 1.0)  # [B]
    return {"diff": float(d.sum() / n.sum()), "low": float(np.quantile(boot, 0.025)),
            "high": float(np.quantile(boot, 0.975)), "p_above_0": float(np.mean(boot > 0)), "users": int(n_u),
            "pairs": int(n.sum())}
