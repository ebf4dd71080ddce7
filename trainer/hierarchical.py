"""The classic baseline: hierarchical (mixed-effects) logistic regression of pairwise preferences.

A comparison of answers a and b to query q is modelled as P(a beats b) = sigmoid((f(q, a) - f(q, b)) . w_u),
with f(q, m) = [LLM one-hot, numeric catalog attributes of m (log prices, log size when present),
topic(q) x LLM one-hot], topic(q) = the k-means cluster of q's embedding (k chosen on validation, clusters
fitted on the training queries). w_u = w_global + d_u: w_global is fitted on the training comparisons,
d_u by L2-penalised Newton steps (lambda = 1) on the user's comparisons that precede the prediction,
refitted before every prediction. It needs no labels beyond the ratings and works for a catalog with
descriptions only (then f has no attribute columns).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from graphstore.schema import HeldOutGroup, TrainingSample, UserSubgraph
from trainer.baselines import Baseline
from trainer.data import Dataset, Group, numeric_attributes

TOPIC_CHOICES = (4, 8, 14, 20)


def newton_logistic(x: np.ndarray, y: np.ndarray, prior_mean: np.ndarray, lam: float, iters: int = 5) -> np.ndarray:
    """argmin_w sum_i BCE(sigmoid(x_i . w), y_i) + lam/2 |w - prior_mean|^2 by Newton's method."""
    w = prior_mean.copy()
    if len(y) == 0:
        return w
    eye = np.eye(len(w))
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + lam * (w - prior_mean)
        hess = (x * (p * (1 - p))[:, None]).T @ x + lam * eye
        w = w - np.linalg.solve(hess, grad)
    return w


class HierarchicalLogistic(Baseline):
    name = "hierarchical_logistic"

    def __init__(self, topics: int | None = None, lam: float = 1.0, global_lam: float = 1.0, seed: int = 0):
        self.topics, self.lam, self.global_lam, self.seed = topics, lam, global_lam, seed

    # --- features ----------------------------------------------------------------------------
    def _setup(self, ds: Dataset, k: int) -> None:
        from sklearn.cluster import KMeans

        train_rows = sorted({ds.query_row[q] for g in ds.groups if g.split == "train"
                             for q in [_qkey(g)]})
        km = KMeans(k, n_init=4, random_state=self.seed).fit(ds.query_emb[train_rows].astype(np.float64))
        self.topic_of = dict(zip(ds.query_row, km.predict(ds.query_emb.astype(np.float64))[list(ds.query_row.values())]))
        self.k = k
        self.llms = {m: i for i, m in enumerate(sorted({m for g in ds.groups if g.split == "train" for m in g.llm_ids}))}
        attrs = {m: numeric_attributes(ds.catalog.get(m, {})) for m in ds.llms}
        names = sorted({a for v in attrs.values() for a in v})
        # attributes are standardised over the catalog; an LLM without one gets the mean (0)
        table = np.array([[attrs[m].get(a, np.nan) for a in names] for m in sorted(ds.llms)], np.float64)
        mu = np.nanmean(table, 0) if len(names) else np.zeros(0)
        sd = np.nanstd(table, 0) + 1e-6 if len(names) else np.zeros(0)
        self.attr = {m: np.nan_to_num((np.array([attrs[m].get(a, np.nan) for a in names]) - mu) / sd)
                     for m in ds.llms}
        self.n_attr = len(names)
        self.dim = len(self.llms) * (1 + k) + self.n_attr
        self._cache: dict[tuple, tuple[list, list]] = {}  # one comparison's rows, reused by every later prefix

    def features(self, query_key: str, llm: str) -> np.ndarray:
        x = np.zeros(self.dim)
        n = len(self.llms)
        i = self.llms.get(llm)
        if i is not None:
            x[i] = 1.0
            x[n + self.n_attr + self.topic_of.get(query_key, 0) * n + i] = 1.0
        x[n:n + self.n_attr] = self.attr.get(llm, np.zeros(self.n_attr))
        return x

    def comparisons(self, groups: Sequence[tuple[str, Sequence[str], np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """(query_key, llm ids, ratings) groups -> feature differences [P, dim] and labels [P] (ties skipped)."""
        xs, ys = [], []
        for qk, llms, r in groups:
            key = (qk, tuple(llms), tuple(np.asarray(r).tolist()))
            hit = self._cache.get(key)
            if hit is None:
                f = [self.features(qk, m) for m in llms]
                pairs = [(a, b) for a in range(len(llms)) for b in range(a + 1, len(llms)) if r[a] != r[b]]
                hit = self._cache[key] = ([f[a] - f[b] for a, b in pairs], [float(r[a] > r[b]) for a, b in pairs])
            xs += hit[0]
            ys += hit[1]
        return (np.array(xs) if xs else np.zeros((0, self.dim))), np.array(ys)

    # --- fit / score -------------------------------------------------------------------------
    def fit(self, ds: Dataset, split: str = "train") -> "HierarchicalLogistic":
        if self.topics is None:  # choose k on the validation split (falls back to 8 without one)
            best = None
            for k in TOPIC_CHOICES:
                acc = HierarchicalLogistic(k, self.lam, self.global_lam, self.seed).fit(ds, split).validate(ds)
                if best is None or acc > best[0]:
                    best = (acc, k)
            self.topics = best[1] if best and not np.isnan(best[0]) else 8
            self.validation = {"topics": self.topics}
        self._setup(ds, self.topics)
        x, y = self.comparisons([(_qkey(g), g.llm_ids, g.ratings) for g in ds.groups if g.split == split])
        self.w = newton_logistic(x, y, np.zeros(self.dim), self.global_lam, iters=10)
        return self

    def validate(self, ds: Dataset) -> float:
        from trainer.data import online_samples
        from trainer.metrics import pair_metrics

        samples = online_samples(ds, "valid", history=10**9, embed=False)
        if not samples:
            return float("nan")
        return pair_metrics([g for s in samples for g in s.targets], self.score(samples))["accuracy"]

    def user_weights(self, visible: UserSubgraph) -> np.ndarray:
        """w_global + d_u fitted on the user's visible comparisons."""
        groups: dict[tuple[str, int], tuple[str, list[str], list[float]]] = {}
        for c, t, m, qk, r in zip(visible.conversation_ids, visible.turn_index.tolist(), visible.llm_ids,
                                  visible.query_keys, visible.rating.tolist()):
            if not np.isnan(r):
                entry = groups.setdefault((c, t), (qk, [], []))
                entry[1].append(m)
                entry[2].append(r)
        x, y = self.comparisons([(qk, ms, np.array(rs)) for qk, ms, rs in groups.values()])
        return newton_logistic(x, y, self.w, self.lam)

    def score(self, samples: Sequence[TrainingSample]) -> list[np.ndarray]:
        out = []
        for s in samples:
            w = self.user_weights(s.visible)
            out += [np.array([self.features(g.query_key, m) @ w for m in g.llm_ids]) for g in s.targets]
        return out

    def score_group(self, sample: TrainingSample, g: HeldOutGroup) -> np.ndarray:
        w = self.user_weights(sample.visible)
        return np.array([self.features(g.query_key, m) @ w for m in g.llm_ids])


def _qkey(g: Group) -> str:
    from graphstore.schema import query_key

    return query_key(g.query)
