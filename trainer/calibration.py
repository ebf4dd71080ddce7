"""Level offsets for LLMs the serving model never learned: one number per LLM, added to its score.

A model trained before an LLM was registered scores it from its description only, and the level it gives it can
be far off: bench/results/new_llm_offset.md found the model trained without llama3-chatqa-1.5-70b preferring it on
a third of its test pairs where users preferred it on a quarter, and one number fitted online on the earlier pairs
lifting those pairs' accuracy by 4.45 pts (above counting), while on gemma-2-9b-it it changed nothing. Until a cycle
that learned the LLM is promoted, the trainer fits, for the LLMs its serving model never learned,

    b = argmax  sum over comparison pairs (i beat j) with an offset LLM  log sigmoid(s_i + b_i - s_j - b_j)
                - |b|^2 / (2 prior_sd^2)

from the serving model's own scores s of their comparisons (b_m = 0 for every other LLM), and the
routers add b_m to m's score (``offsets.json`` beside the checkpoints, for the version it was fitted to). A rating
"A beat B" raises b_A or lowers b_B: the sign guarantee holds (tests/trainer/test_calibration.py).

Two callers fit them (both through :func:`calibrate`): a cycle that keeps its serving model, and between cycles
every recount once those LLMs' games have grown by ``RECOUNT_GROWTH`` since the last fit
(trainer.refresh.RefreshTrainer.recalibrate), so the offsets follow an LLM's first feedback by a few dozen events
rather than by a cycle. Each fit is made on the older comparisons and competes with the offsets in force and with
none on the newest: the likeliest wins (bench/results/new_llm_offset.md: choosing by pairs right instead lost a
point against always refitting). The file for a version is replaced only by a fit on feedback at least as recent
(``until_ms``): a cycle that sampled before a recount's fit does not undo it.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from graphstore.schema import HeldOutGroup
from prefstream.files import locked, write_atomic

OFFSETS_FILE = "offsets.json"
PRIOR_SD = 1.0  # the offsets' prior scale, in score (logit) units
RECOUNT_MIN_GAMES = 50  # a recount first fits the offsets when the unlearned LLMs have this many pairwise games...
RECOUNT_GROWTH = 1.5  # ...and again whenever their games reach this multiple of those at the last fit
CRITERION = "likelihood"  # calibrate: how contenders are compared on the fresh pairs (bench/results/new_llm_offset.md)


def offset_pairs(groups: Sequence[HeldOutGroup], scores: Sequence[np.ndarray],
                 llms: Collection[str]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(the offset LLMs met, winner's index [P], loser's index [P] into them or -1, score margin winner - loser [P])
    over the unequal-rating pairs (trainer.metrics.pairs) that compare at least one of ``llms``."""
    from trainer.metrics import pairs

    names = sorted(llms)
    index = {m: i for i, m in enumerate(names)}
    win, lose, margin = [], [], []
    for g, s in zip(groups, scores):
        for a, b in pairs(g):
            if g.llm_ids[a] not in index and g.llm_ids[b] not in index:
                continue
            w, l = (a, b) if g.ratings[a] > g.ratings[b] else (b, a)
            win.append(index.get(g.llm_ids[w], -1))
            lose.append(index.get(g.llm_ids[l], -1))
            margin.append(float(s[w]) - float(s[l]))
    return names, np.array(win, int), np.array(lose, int), np.array(margin, float)


def fit_offsets(groups: Sequence[HeldOutGroup], scores: Sequence[np.ndarray], llms: Collection[str],
                prior_sd: float = PRIOR_SD, iters: int = 50) -> dict[str, float]:
    """The MAP offsets of the module docstring for ``llms`` (Newton steps on a concave objective); an LLM with
    no pair keeps 0."""
    names, win, lose, margin = offset_pairs(groups, scores, llms)
    if not names or len(margin) == 0:
        return {m: 0.0 for m in names}
    # x [P, K]: +1 in the winner's column, -1 in the loser's (an LLM without an offset has none)
    x = np.zeros((len(margin), len(names)))
    rows = np.arange(len(margin))
    x[rows[win >= 0], win[win >= 0]] += 1.0
    x[rows[lose >= 0], lose[lose >= 0]] -= 1.0
    return {m: float(v) for m, v in zip(names, map_offsets(x, margin, prior_sd, iters))}


def map_offsets(x: np.ndarray, margin: np.ndarray, prior_sd: float = PRIOR_SD, iters: int = 50,
                b: np.ndarray | None = None) -> np.ndarray:
    """[K] argmax_b sum_p log sigmoid(margin_p + x_p . b) - |b|^2 / (2 prior_sd^2): pairs [P] as winner-minus-loser
    score margins and x [P, K] (+1 for the winner's offset, -1 for the loser's), Newton steps from ``b`` (0)."""
    b = np.zeros(x.shape[1]) if b is None else np.array(b, float)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(margin + x @ b)))  # P(the winner wins)
        grad = x.T @ (1.0 - p) - b / prior_sd ** 2
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.eye(len(b)) / prior_sd ** 2
        step = np.linalg.solve(hess, grad)
        b += step
        if np.abs(step).max() < 1e-8:
            break
    return b


def apply_offsets(scores: np.ndarray, llm_ids: Sequence[str], offsets: dict[str, float]) -> np.ndarray:
    """``scores`` [C] of ``llm_ids`` with each LLM's offset added (a copy)."""
    return np.asarray(scores, np.float64) + np.array([offsets.get(m, 0.0) for m in llm_ids], np.float64)


def fresh_score(groups: Sequence[HeldOutGroup], scores: Sequence[np.ndarray], llms: Collection[str],
                offsets: dict[str, float], criterion: str = CRITERION) -> float:
    """How well ``offsets`` serve the pairs of ``groups`` that compare one of ``llms``: "accuracy", the pairs whose
    winner scores higher (a tie counts half); "likelihood", the sum of log sigmoid(winner's score - loser's)."""
    return score_pairs(offset_pairs(groups, scores, llms), offsets, criterion)


def score_pairs(met: tuple, offsets: dict[str, float], criterion: str = CRITERION) -> float:
    """fresh_score of pairs already read by offset_pairs (``met``)."""
    names, win, lose, margin = met
    b = np.array([offsets.get(m, 0.0) for m in names] + [0.0])  # index -1: an LLM without an offset
    shifted = margin + b[win] - b[lose]
    if criterion == "accuracy":
        return float(np.sum(shifted > 0) + 0.5 * np.sum(shifted == 0))
    if criterion == "likelihood":
        return float(-np.logaddexp(0.0, -shifted).sum())
    raise ValueError(f"unknown criterion {criterion!r} (accuracy or likelihood)")


def recount_due(games: float, games_at_last_fit: float) -> bool:
    """Whether a recount refits the offsets: the unlearned LLMs' pairwise ``games`` have reached RECOUNT_MIN_GAMES
    and RECOUNT_GROWTH times those at the last fit (0: none yet)."""
    return games >= max(RECOUNT_MIN_GAMES, RECOUNT_GROWTH * games_at_last_fit)


def calibrate(before: Sequence[HeldOutGroup], before_scores: Sequence[np.ndarray], fresh: Sequence[HeldOutGroup],
              fresh_scores: Sequence[np.ndarray], llms: Collection[str], current: dict[str, float] | None = None,
              criterion: str = CRITERION) -> dict:
    """Offsets for ``llms`` from a serving model's own scores, chosen prequentially: a fit on the ``before``
    comparisons, the offsets in force (``current``) and none compete on the ``fresh`` pairs with those LLMs; the
    one that serves them best (fresh_score by ``criterion``) is chosen, ties going to the newer (the fit, then those
    in force); without fresh pairs the offsets in force stay. A chosen fit is fitted again on both sides. Returns
    {"fitted_before_cutoff", "fresh_pairs", "criterion", "fresh_scores" (per contender), "chosen" ("fit", "in
    force" or "none"), "offsets" (what the routers are to add)}."""
    b = fit_offsets(before, before_scores, llms)
    contenders = {"fit": b, "in force": dict(current or {}), "none": {}}
    met = offset_pairs(fresh, fresh_scores, llms)  # read once, scored for each contender
    score = {k: score_pairs(met, o, criterion) for k, o in contenders.items()}
    n_fresh = len(met[3])
    chosen = max(score, key=score.get) if n_fresh else "in force"  # the first of the best: dicts keep their order
    offsets = (fit_offsets(list(before) + list(fresh), list(before_scores) + list(fresh_scores), llms)
               if chosen == "fit" else contenders[chosen])
    return {"fitted_before_cutoff": b, "fresh_pairs": n_fresh, "criterion": criterion, "fresh_scores": score,
            "chosen": chosen, "offsets": offsets}


def save_offsets(root: Path | str, version: str, offsets: dict[str, float], until_ms: int | None = None,
                 **meta) -> bool:
    """Write the offsets for model ``version`` (temp file + rename: a router reads the old or the new file), fitted
    on feedback up to ``until_ms``; False (nothing written) when the file holds ``version``'s offsets from later
    feedback."""
    root = Path(root)
    with locked(root):  # the trainer's recounts and its cycle tasks both write: no write lands between check and write
        doc = read_offsets(root)
        if until_ms is not None and doc.get("version") == version and doc.get("until_ms", -1) > until_ms:
            return False
        write_atomic(root / OFFSETS_FILE, json.dumps({"version": version, "offsets": offsets, "until_ms": until_ms,
                                                      **meta}, default=float))
    return True


def read_offsets(root: Path | str) -> dict:
    """The offsets file as written (version, offsets, until_ms and what its fit logged); {} when there is none."""
    try:
        doc = json.loads((Path(root) / OFFSETS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def load_offsets(root: Path | str, version: str) -> dict[str, float]:
    """The offsets fitted for model ``version``; empty when none were, or they were fitted for another version."""
    doc = read_offsets(root)
    return {str(m): float(b) for m, b in doc.get("offsets", {}).items()} if doc.get("version") == version else {}
