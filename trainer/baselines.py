"""Non-graph baselines, scored on exactly the samples (visible history + target groups) the model gets.

random · global best LLM · per-user win rate ("majority") · kNN on the query embedding · matrix
factorization as in RouteLLM. The neural ablations (dot-product head, no user nodes) are GMTRouter configs.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from graphstore.counts import win_counts
from graphstore.schema import HeldOutGroup, TrainingSample, UserSubgraph
from trainer.data import Dataset


def _centered(ratings: np.ndarray) -> np.ndarray:
    return ratings - ratings.mean() if len(ratings) > 1 else np.zeros_like(ratings)


class Baseline:
    name = "baseline"

    def fit(self, ds: Dataset, split: str = "train") -> "Baseline":
        return self

    def score(self, samples: Sequence[TrainingSample]) -> list[np.ndarray]:
        return [self.score_group(s, g) for s in samples for g in s.targets]

    def score_group(self, sample: TrainingSample, g: HeldOutGroup) -> np.ndarray:
        raise NotImplementedError


class RandomBaseline(Baseline):
    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def score(self, samples: Sequence[TrainingSample]) -> list[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        return [rng.random(len(g.llm_ids)) for s in samples for g in s.targets]


class GlobalBest(Baseline):
    """Every user gets the LLMs ranked by their pairwise win rate in training."""

    name = "global_best"

    def fit(self, ds: Dataset, split: str = "train") -> "GlobalBest":
        wins, games = win_counts([(g.llm_ids, g.ratings) for g in ds.groups if g.split == split])
        self.rate = {m: wins.get(m, 0.0) / games[m] for m in games}
        return self

    def score_group(self, sample: TrainingSample, g: HeldOutGroup) -> np.ndarray:
        return np.array([self.rate.get(m, 0.5) for m in g.llm_ids])


class PerUserMajority(GlobalBest):
    """Each LLM's win rate in the user's own visible history, shrunk towards the global win rate."""

    name = "per_user_majority"

    def __init__(self, prior: float = 2.0):
        self.prior = prior

    def score_group(self, sample: TrainingSample, g: HeldOutGroup) -> np.ndarray:
        return win_rates(sample.visible, g.llm_ids, self.rate, self.prior)


def keyed_comparisons(v: UserSubgraph) -> dict[tuple[str, int], tuple[list[str], np.ndarray]]:
    """(conversation, 1-based turn) -> the rated answers of that comparison of a history."""
    groups: dict[tuple[str, int], tuple[list[str], list[float]]] = {}
    for c, t, m, r in zip(v.conversation_ids, v.turn_index.tolist(), v.llm_ids, v.rating.tolist()):
        if not np.isnan(r):
            groups.setdefault((c, t + 1), ([], []))
            groups[(c, t + 1)][0].append(m)
            groups[(c, t + 1)][1].append(r)
    return {k: (ls, np.array(rs)) for k, (ls, rs) in groups.items()}


def visible_comparisons(v: UserSubgraph) -> list[tuple[list[str], np.ndarray]]:
    """The rated answers of each comparison (turns sharing conversation and turn index) of a history."""
    return list(keyed_comparisons(v).values())


def user_counts(v: UserSubgraph) -> tuple[dict[str, float], dict[str, float]]:
    """Each LLM's pairwise wins and games for the user: over the whole past when the reader counted it
    (``v.win_counts``), else over the history's rated turns."""
    if v.win_counts is None:
        return win_counts(visible_comparisons(v))
    return {m: w for m, (w, _) in v.win_counts.items()}, {m: g for m, (_, g) in v.win_counts.items()}


def win_rates(v: UserSubgraph, llm_ids: Sequence[str], rate: Mapping[str, float], prior: float) -> np.ndarray:
    """Each LLM's pairwise win rate in the user's history (ties count half), shrunk towards ``rate``."""
    wins, games = user_counts(v)
    return np.array([(wins.get(m, 0.0) + prior * rate.get(m, 0.5)) / (games.get(m, 0.0) + prior) for m in llm_ids])


class QueryKNN(Baseline):
    """Mean within-group centered rating of each LLM over the k training queries nearest to the query."""

    name = "knn"

    def __init__(self, k: int = 40):
        self.k = k

    def fit(self, ds: Dataset, split: str = "train") -> "QueryKNN":
        train = [g for g in ds.groups if g.split == split and g.has_pairs]
        self.llms = sorted({m for g in train for m in g.llm_ids})
        col = {m: i for i, m in enumerate(self.llms)}
        self.q = np.stack([ds.emb(g.query) for g in train]).astype(np.float32)  # [G, D]
        self.r = np.zeros((len(train), len(self.llms)), np.float32)
        self.mask = np.zeros_like(self.r)
        for i, g in enumerate(train):
            for m, c in zip(g.llm_ids, _centered(g.ratings)):
                self.r[i, col[m]] = c
                self.mask[i, col[m]] = 1.0
        self.col = col
        return self

    def score(self, samples: Sequence[TrainingSample]) -> list[np.ndarray]:
        groups = [g for s in samples for g in s.targets]
        out = []
        for i in range(0, len(groups), 512):
            chunk = groups[i:i + 512]
            sims = np.stack([g.query_emb for g in chunk]) @ self.q.T  # [B, G]
            top = np.argpartition(-sims, min(self.k, sims.shape[1] - 1), axis=1)[:, :self.k]
            num = self.r[top].sum(1)  # [B, M]
            den = self.mask[top].sum(1) + 1.0
            est = num / den
            for g, e in zip(chunk, est):
                out.append(np.array([e[self.col[m]] if m in self.col else 0.0 for m in g.llm_ids]))
        return out


class MatrixFactorization(Baseline):
    """RouteLLM's MF router: s(q, m) = w^T (v_m ⊙ (W q + b)), trained with Bradley-Terry on training pairs."""

    name = "matrix_factorization"

    def __init__(self, dim: int = 64, epochs: int = 8, lr: float = 3e-3, seed: int = 0):
        self.dim, self.epochs, self.lr, self.seed = dim, epochs, lr, seed

    def fit(self, ds: Dataset, split: str = "train") -> "MatrixFactorization":
        import torch  # here, not at import: a router that only counts never loads torch for this module
        import torch.nn.functional as F

        torch.manual_seed(self.seed)
        train = [g for g in ds.groups if g.split == split]
        self.llms = {m: i for i, m in enumerate(sorted({m for g in train for m in g.llm_ids}))}
        qs, hi, lo = [], [], []
        for g in train:
            for a in range(len(g.llm_ids)):
                for b in range(len(g.llm_ids)):
                    if g.ratings[a] > g.ratings[b]:
                        qs.append(ds.emb(g.query))
                        hi.append(self.llms[g.llm_ids[a]])
                        lo.append(self.llms[g.llm_ids[b]])
        q = torch.from_numpy(np.stack(qs))
        hi_t, lo_t = torch.tensor(hi), torch.tensor(lo)
        self.v = torch.nn.Embedding(len(self.llms), self.dim)
        self.proj = torch.nn.Linear(q.shape[1], self.dim)
        self.w = torch.nn.Linear(self.dim, 1, bias=False)
        params = [*self.v.parameters(), *self.proj.parameters(), *self.w.parameters()]
        opt = torch.optim.Adam(params, lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(self.epochs):
            for idx in torch.randperm(len(q), generator=gen).split(512):
                pq = self.proj(q[idx])
                diff = self.w(self.v(hi_t[idx]) * pq) - self.w(self.v(lo_t[idx]) * pq)
                loss = F.softplus(-diff).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        return self

    def score_group(self, sample: TrainingSample, g: HeldOutGroup) -> np.ndarray:
        import torch

        ids = [self.llms.get(m, -1) for m in g.llm_ids]
        with torch.no_grad():
            pq = self.proj(torch.from_numpy(g.query_emb))
            return np.array([float(self.w(self.v.weight[i] * pq)) if i >= 0 else 0.0 for i in ids])


def all_baselines(seed: int = 0) -> list[Baseline]:
    return [RandomBaseline(seed), GlobalBest(), PerUserMajority(), QueryKNN(), MatrixFactorization(seed=seed)]
