"""Promotion by evidence: which scorer serves after a trainer cycle.

The candidate, the serving model and the count-based scorer are judged on the same fresh comparisons
(feedback no training saw). Per comparison pair each is right (1), wrong (0) or undecided (1/2, equal
scores). A one-sided sign test on the pairs where two scorers disagree says whether one is better:

- a candidate is promoted only if it is significantly better than the count-based scorer AND than the
  serving model (when one serves), on at least ``min_pairs`` pairs;
- or, when some fresh pairs compare an LLM the serving model never learned (``unlearned``: registered after it
  was trained, trainer.refresh.unlearned), a candidate significantly better than the count-based scorer overall is
  also promoted if it is significantly better than the serving model on those pairs (at least ``min_new_pairs``),
  not significantly worse on the rest, and not behind it over all pairs. A cycle that learned a new LLM is usually
  far better on its pairs and level elsewhere, which the test over all pairs dilutes; meanwhile the serving model
  scores the new LLM from its description only. Two routes each at ``alpha``: the chance of promoting a candidate
  no better than the serving model on the new LLM's pairs is at most 2 * alpha, and only while an unlearned LLM
  has feedback;
- a serving model that is significantly worse than the count-based scorer is demoted: counting serves;
- otherwise nothing changes, and the reason says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Collection, Sequence

import numpy as np
from scipy.stats import binomtest

from graphstore.schema import HeldOutGroup
from trainer.metrics import pairs


def pair_has(groups: Sequence[HeldOutGroup], llms: Collection[str]) -> np.ndarray:
    """[P] whether each unequal-rating pair of the groups (metrics order, as pair_correct) compares one of ``llms``."""
    return np.array([g.llm_ids[a] in llms or g.llm_ids[b] in llms for g in groups for a, b in pairs(g)], bool)


def pair_correct(groups: Sequence[HeldOutGroup], scores: Sequence[np.ndarray]) -> np.ndarray:
    """[P] 1 right, 0 wrong, 0.5 equal scores, over the unequal-rating pairs of the groups (metrics order)."""
    out = []
    for g, s in zip(groups, scores):
        for a, b in pairs(g):
            d = float(s[a]) - float(s[b])
            out.append(0.5 if d == 0 else float((d > 0) == (g.ratings[a] > g.ratings[b])))
    return np.array(out, np.float64)


@dataclass
class Comparison:
    """``a`` vs ``b`` on the same pairs: accuracies, discordant wins / losses of a, one-sided p (a > b)."""

    accuracy_a: float
    accuracy_b: float
    wins: int
    losses: int
    p_better: float  # P(at least `wins` of `wins + losses` by chance): small = a is better
    p_worse: float  # the same the other way: small = a is worse


def compare(a: np.ndarray, b: np.ndarray) -> Comparison:
    wins, losses = int(np.sum(a > b)), int(np.sum(a < b))
    n = wins + losses
    p_better = binomtest(wins, n, 0.5, alternative="greater").pvalue if n else 1.0
    p_worse = binomtest(losses, n, 0.5, alternative="greater").pvalue if n else 1.0
    acc = lambda x: float(x.mean()) if len(x) else float("nan")  # noqa: E731
    return Comparison(acc(a), acc(b), wins, losses, float(p_better), float(p_worse))


@dataclass
class Verdict:
    promote: bool
    demote: bool
    reason: str
    pairs: int
    accuracy: dict  # scorer -> accuracy on the fresh pairs
    tests: dict  # "candidate_vs_count", "candidate_vs_serving", "serving_vs_count" (and, with unlearned LLMs,
    # "candidate_vs_serving_unlearned", "candidate_vs_serving_rest") -> Comparison dict
    unlearned_pairs: int = 0  # fresh pairs comparing an LLM the serving model never learned
    route: str = ""  # why promoted: "all pairs" or "unlearned LLMs" (empty: not promoted)

    def to_dict(self) -> dict:
        return asdict(self)


def judge(candidate: np.ndarray, count: np.ndarray, serving: np.ndarray | None, *, min_pairs: int = 100,
          alpha: float = 0.05, unlearned: np.ndarray | None = None, min_new_pairs: int = 50) -> Verdict:
    """The decision from per-pair correctness of candidate, count-based scorer and serving model (None: the
    count-based scorer is serving). ``unlearned`` [P] marks the pairs that compare an LLM the serving model never
    learned (pair_has): the second route of the module docstring, off with ``min_new_pairs=0``."""
    n = len(candidate)
    acc = {"candidate": float(candidate.mean()) if n else float("nan"),
           "count": float(count.mean()) if n else float("nan")}
    tests = {"candidate_vs_count": asdict(c_count := compare(candidate, count))}
    if serving is not None:
        acc["serving"] = float(serving.mean()) if n else float("nan")
        tests["candidate_vs_serving"] = asdict(c_serv := compare(candidate, serving))
        tests["serving_vs_count"] = asdict(s_count := compare(serving, count))
    n_new = int(unlearned.sum()) if serving is not None and unlearned is not None else 0
    if n_new:
        tests["candidate_vs_serving_unlearned"] = asdict(c_new := compare(candidate[unlearned], serving[unlearned]))
        tests["candidate_vs_serving_rest"] = asdict(c_rest := compare(candidate[~unlearned], serving[~unlearned]))
    verdict = lambda promote, demote, why, route="": Verdict(  # noqa: E731
        promote, demote, why + f" on {n} pairs", n, acc, tests, n_new, route)
    if n < min_pairs:
        return Verdict(False, False, f"only {n} fresh pairs (< {min_pairs}): nothing changes", n, acc, tests, n_new)
    beats_count = c_count.p_better < alpha
    beats_serving = serving is None or c_serv.p_better < alpha
    why_count = f"candidate beats counting ({acc['candidate']:.3f} vs {acc['count']:.3f}, p={c_count.p_better:.3g})"
    if beats_count and beats_serving:
        if serving is not None:
            why_count += f" and the serving model ({acc['serving']:.3f}, p={c_serv.p_better:.3g})"
        return verdict(True, False, why_count, "all pairs")
    if (beats_count and 0 < min_new_pairs <= n_new and c_new.p_better < alpha and c_rest.p_worse >= alpha
            and acc["candidate"] >= acc["serving"]):
        why = (f"{why_count}, and the serving model on the {n_new} pairs with LLMs it never learned "
               f"({c_new.accuracy_a:.3f} vs {c_new.accuracy_b:.3f}, p={c_new.p_better:.3g}), not significantly worse "
               f"on the rest ({c_rest.accuracy_a:.3f} vs {c_rest.accuracy_b:.3f}, p={c_rest.p_worse:.3g}) nor over "
               f"all pairs ({acc['candidate']:.3f} vs {acc['serving']:.3f})")
        return verdict(True, False, why, "unlearned LLMs")
    demote = serving is not None and s_count.p_worse < alpha
    if not beats_count:
        why = (f"candidate not significantly better than counting ({acc['candidate']:.3f} vs {acc['count']:.3f}, "
               f"p={c_count.p_better:.3g} >= {alpha})")
    else:
        why = (f"candidate not significantly better than the serving model ({acc['candidate']:.3f} vs "
               f"{acc['serving']:.3f}, p={c_serv.p_better:.3g} >= {alpha})")
        if n_new:
            why += (f", nor on the {n_new} pairs with LLMs it never learned ({c_new.accuracy_a:.3f} vs "
                    f"{c_new.accuracy_b:.3f}, p={c_new.p_better:.3g}; rest {c_rest.accuracy_a:.3f} vs "
                    f"{c_rest.accuracy_b:.3f}, p worse={c_rest.p_worse:.3g})")
    if demote:
        why += (f"; the serving model fell behind counting ({acc['serving']:.3f} vs {acc['count']:.3f}, "
                f"p={s_count.p_worse:.3g}): demoted, counting serves")
    return verdict(False, demote, why)
