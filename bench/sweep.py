"""One change at a time: GMTRouter's width, depth, training length, learning rate, edges, loss, topics and the
gates' conversation-structure input on both quality benchmarks, each against the defaults trained in the same run.

    python bench/sweep.py        # -> bench/results/sweep.{json,md,png}

Every variant changes one field of the defaults (`prefstream eval`'s: GMTRouterConfig / TrainConfig) and is
trained and tested exactly as `prefstream eval` does (validation-chosen step, serving history) on seed 0 of
the default and the families benchmark (bench/quality.py's files, written here when missing). Its accuracy is
compared with the defaults' on the same test pairs: the difference with a 95 % interval from resampling whole
users (trainer.metrics.user_bootstrap). That interval covers the test users, not training: the row ``seed=1``
changes nothing but the training seed, so a variant that moves accuracy no further than it does is not a
finding either; ``seed=2`` and the ``structure+seed=N`` rows give that change three training seeds.

Runs are independent processes of one torch thread, ``--jobs`` at a time (2 on the 2-core machine), so the
seconds column compares variants with each other, not with bench/results/quality.json's 2-thread timings.
Results are written after every run and a rerun skips what is already there (``--force`` redoes the variants
it names), so the sweep can be stopped and resumed. Run it alone: about 7 minutes per variant on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import catalog_for, command_line  # noqa: E402
from trainer.config import GMTRouterConfig, TrainConfig  # noqa: E402
from trainer.families import write_benchmark  # noqa: E402

RESULTS = ROOT / "bench" / "results"
KINDS = ("default", "families")
#: variant -> (GMTRouterConfig changes, TrainConfig changes); the issue's list, most informative first
VARIANTS: dict[str, tuple[dict, dict]] = {
    "defaults": ({}, {}),
    "seed=1": ({}, {"seed": 1}),  # no change but the training seed: how far training noise alone moves a row
    "layers=1": ({"layers": 1}, {}),
    "layers=3": ({"layers": 3}, {}),
    "no_hgt": ({"use_hgt": False}, {}),  # the ablation of `prefstream eval`, here on both benchmarks
    "hidden=32": ({"hidden": 32}, {}),
    "hidden=96": ({"hidden": 96}, {}),
    "steps=1000": ({}, {"steps": 1000}),
    "steps=3000": ({}, {"steps": 3000}),
    "lr=1e-3": ({}, {"lr": 1e-3}),
    "lr=4e-3": ({}, {"lr": 4e-3}),
    "reverse_edges": ({"reverse_edges": True}, {}),
    "loss=bce": ({}, {"loss": "bce"}),
    "topics=32": ({"topics": 32}, {}),
    "dropout=0": ({"dropout": 0.0}, {}),
    "seed=2": ({}, {"seed": 2}),
    "structure": ({"structure": True}, {}),  # the gates read the share of follow-up turns (rating-blind)
    "structure+seed=1": ({"structure": True}, {"seed": 1}),
    "structure+seed=2": ({"structure": True}, {"seed": 2}),
    "pref_dim=32": ({"pref_dim": 32}, {}),  # twice the features of the per-user posterior
    "robust_prior": ({"robust_prior": True}, {}),  # the posterior's prior turns linear in its tails (heavy tails)
    "robust_prior+seed=1": ({"robust_prior": True}, {"seed": 1}),  # against the row seed=1
    "crowd=earlier": ({}, {}),  # the evaluation's crowd, not the model: see CROWD
    "crowd=earlier+seed=1": ({}, {"seed": 1}),  # against the row seed=1
    "crowd=earlier+seed=2": ({}, {"seed": 2}),  # against the row seed=2
    # a Polyak average of the weights (horizon ~100 steps) is validated and served: against crowd=earlier
    "crowd=earlier+ema=0.99": ({}, {"ema": 0.99}),
    # the memory's query similarity over the learned topic memberships, not the text embeddings: against crowd=earlier
    "crowd=earlier+memory_space=topics": ({"memory_space": "topics"}, {}),
    # the text similarity times a learned power of the topic memberships' similarity: against crowd=earlier
    "crowd=earlier+memory_space=both": ({"memory_space": "both"}, {}),
    # a sample's later targets see its earlier targets as their conversation's previous turns: against crowd=earlier
    "crowd=earlier+chain_targets": ({}, {"chain_targets": True}),
    "crowd=earlier+chain_targets+seed=1": ({}, {"chain_targets": True, "seed": 1}),  # against crowd=earlier+seed=1
    "crowd=earlier+chain_targets+seed=2": ({}, {"chain_targets": True, "seed": 2}),  # against crowd=earlier+seed=2
    # the HGT ablation under the chaining defaults: against crowd=earlier+chain_targets (and its seed=1 row)
    "crowd=earlier+chain_targets+no_hgt": ({"use_hgt": False}, {"chain_targets": True}),
    "crowd=earlier+chain_targets+no_hgt+seed=1": ({"use_hgt": False}, {"chain_targets": True, "seed": 1}),
    # diagnostic, not servable (no sign guarantee): the HGT reads the ratings, so the user state, the gates and the
    # prior strength can tell a noisy rater from a drifting one; against crowd=earlier+chain_targets
    "crowd=earlier+chain_targets+hgt_ratings": ({"hgt_ratings": True}, {"chain_targets": True}),
    # every training target reads all the turns before it, as when served (one target per sample instead of the
    # next four groups after one cut); against crowd=earlier+chain_targets
    "crowd=earlier+chain_targets+stride=1": ({}, {"chain_targets": True, "stride": 1}),
    # the posterior's recency weight mixes a short and a long exponential (learned), so a drifting user's newest
    # comparisons and a noisy user's oldest ones can both count; against crowd=earlier+chain_targets
    "crowd=earlier+chain_targets+two_scale_recency": ({"two_scale_recency": True}, {"chain_targets": True}),
    # the prior strength per feature, from the user's rating-blind graph state (which taste dimensions the user's
    # queries suggest), not one for all; against crowd=earlier+chain_targets
    "crowd=earlier+chain_targets+prior_gate_features": ({"prior_gate_features": True}, {"chain_targets": True}),
    # twice the attention heads of the HGT and the global head (8 of 8 dims instead of 4 of 16); against
    # crowd=earlier+chain_targets
    "crowd=earlier+chain_targets+heads=8": ({"heads": 8}, {"chain_targets": True}),
    # AdamW's decoupled weight decay at 1e-2 instead of 1e-4 (it also pulls the posterior's log prior precision,
    # recency and label scales towards 0); against crowd=earlier+chain_targets
    "crowd=earlier+chain_targets+weight_decay=1e-2": ({}, {"chain_targets": True, "weight_decay": 1e-2}),
    # 128 users a step instead of 64 for the same 2,000 steps: twice the samples, about twice the training time;
    # against crowd=earlier+chain_targets
    "crowd=earlier+chain_targets+batch_size=128": ({}, {"chain_targets": True, "batch_size": 128}),
    # the LLMs' log input and output prices enter beside their description embeddings (the issue's "how LLM
    # descriptions and prices enter"); against crowd=earlier+chain_targets
    "crowd=earlier+chain_targets+llm_prices": ({"llm_prices": True}, {"chain_targets": True}),
    # the issue's "learning-rate schedule": the rate stays at lr after the warm-up instead of a cosine decay to 5 %;
    # against crowd=earlier+chain_targets
    "crowd=earlier+chain_targets+lr_schedule=constant": ({}, {"chain_targets": True, "lr_schedule": "constant"}),
    # the issue's "k": training samples show 40-160 visible turns (fewer only where the user has fewer) instead
    # of 0-160, closer to the 120 served to a user with a long past; against crowd=earlier+chain_targets
    "crowd=earlier+chain_targets+k_min=40": ({}, {"chain_targets": True, "k_min": 40}),
}
#: what validation and test targets' crowd reads (trainer.data.CROWD_SOURCES). Every row was measured with the
#: training split's ratings, the protocol before session 27; ``crowd=earlier`` is the defaults with the crowd
#: that `prefstream eval` reads now, every other user's ratings from before the target (the same trained model
#: when the validation-chosen step is the same).
CROWD = {name: "earlier" for name in VARIANTS if name.startswith("crowd=earlier")}


def variant_config(name: str) -> TrainConfig:
    """The variant's changes over the defaults the rows were measured against: those of session 31, when
    ``chain_targets`` was still off (the chain_targets rows set it)."""
    model, train = VARIANTS[name]
    return TrainConfig(model=dataclasses.replace(GMTRouterConfig(), **model), **{"chain_targets": False, **train})


def run_variant(kind: str, name: str, data: Path, pairs_dir: Path) -> dict:
    """Train one variant on one benchmark (one torch thread) and test it; per-pair correctness goes to
    ``pairs_dir`` for the paired comparison with the defaults."""
    import torch

    torch.set_num_threads(1)
    from trainer.data import config_samples, iter_online_samples, load_dataset, online_samples
    from trainer.evaluate import per_family, score_stream
    from trainer.history import serving_history
    from trainer.metrics import pair_metrics
    from trainer.train import fit

    cfg, history = variant_config(name), serving_history()
    ds = load_dataset({s: data / f"{s}.jsonl" for s in ("train", "valid", "test")},
                      catalog_for(kind, data), progress=False,
                      crowd=CROWD.get(name, "train"))
    t0 = time.perf_counter()
    res = fit(config_samples(ds, cfg), online_samples(ds, "valid", turns=history), cfg, progress=False,
              llms=ds.llms)
    train_s = time.perf_counter() - t0
    groups, scores = score_stream(res.model, iter_online_samples(ds, "test", turns=history))
    correct, users = pair_table(groups, scores)
    pairs_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(pairs_dir / f"{kind}__{name}.npz", correct=correct, users=users)
    m = pair_metrics(groups, scores)
    out = {"accuracy": m["accuracy"], "auc": m["auc"], "valid_auc": res.metrics.get("auc"),
           "best_step": res.best_step, "train_seconds": round(train_s, 1), "step_seconds": res.step_seconds,
           "config": cfg.to_dict(), "held_out_crowd": ds.held_out_crowd}
    fams = data / "users.json"
    if fams.exists():
        pf = per_family(groups, {"gmtrouter": scores}, json.loads(fams.read_text()))
        out["families"] = {f: v["gmtrouter"] for f, v in pf.items()}
    return out


def pair_table(groups, scores) -> tuple[np.ndarray, np.ndarray]:
    """Per test pair: correctness (trainer.promotion.pair_correct) and user, in the evaluation's pair order."""
    from trainer.metrics import pairs
    from trainer.promotion import pair_correct

    return pair_correct(groups, scores), np.array([g.user_id for g in groups for _ in pairs(g)])


def compare(pairs_dir: Path, kind: str, name: str, n_boot: int) -> dict | None:
    """The variant's accuracy minus the defaults' on the same pairs, with a user-clustered 95 % interval."""
    from trainer.metrics import user_bootstrap

    a, b = pairs_dir / f"{kind}__{name}.npz", pairs_dir / f"{kind}__defaults.npz"
    if name == "defaults" or not (a.exists() and b.exists()):
        return None
    va, vb = np.load(a), np.load(b)
    if not np.array_equal(va["users"], vb["users"]):
        raise ValueError(f"{a} and {b} do not hold the same test pairs")
    return user_bootstrap(va["correct"], vb["correct"], va["users"], n_boot=n_boot)


def _cell(r: dict | None, d: dict | None) -> str:
    if r is None:
        return "not run"
    if d is None:
        return f"{r['accuracy']:.4f}"
    return f"{r['accuracy']:.4f} ({100 * d['diff']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}])"


def markdown(out: dict) -> str:
    md = ["# One change at a time: GMTRouter variants on both quality benchmarks", "",
          "Commands (in order; a rerun adds what is missing): " + "; ".join(f"`{c}`" for c in out["commands"]),
          "", "Each row changes one field of `prefstream eval`'s defaults; seed 0 of each benchmark, one torch thread "
          f"per run, {out['jobs']} runs at a time. In brackets: accuracy points against the defaults on the same "
          f"test pairs, 95 % interval from {out['n_boot']} resamples of whole users. Seconds are training time "
          "(comparable within this table only).", "",
          "| variant | default | families | best step (default / families) | train s (default / families) |",
          "|---|---|---|---|---|"]
    res, diffs = out["results"], out["vs_defaults"]
    for name in out["variants"]:
        r = {k: res.get(k, {}).get(name) for k in KINDS}
        d = {k: diffs.get(k, {}).get(name) for k in KINDS}
        steps = " / ".join(str(r[k]["best_step"]) if r[k] else "-" for k in KINDS)
        secs = " / ".join(f"{r[k]['train_seconds']:.0f}" if r[k] else "-" for k in KINDS)
        md.append(f"| {name} | {_cell(r['default'], d['default'])} | {_cell(r['families'], d['families'])} | "
                  f"{steps} | {secs} |")
    fam = res.get("families", {})
    if fam.get("defaults", {}).get("families"):
        names = [n for n in out["variants"] if n in fam]
        fams = list(fam["defaults"]["families"])
        md += ["", "Per family of the second benchmark (accuracy):", "",
               "| variant | " + " | ".join(fams) + " |", "|---|" + "---|" * len(fams)]
        md += [f"| {n} | " + " | ".join(f"{fam[n]['families'][f]:.4f}" for f in fams) + " |" for n in names]
    md += ["", f"Load average at start {out['load_avg_start'][0]:.2f}, at end {out['load_avg_end'][0]:.2f} "
           "(2 cores; nothing else ran)."] + [f"- {n}" for n in out.get("notes", [])]
    return "\n".join(md) + "\n"


def plot(out: dict, path: Path) -> None:
    """Each variant's accuracy change against the defaults, with its interval, on both benchmarks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in out["variants"] if n != "defaults"]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.4))
    for j, (kind, color) in enumerate(zip(KINDS, ("tab:blue", "tab:green"))):
        for i, n in enumerate(names):
            d = out["vs_defaults"].get(kind, {}).get(n)
            if d:
                y = len(names) - 1 - i + (0.15 if j == 0 else -0.15)
                ax.errorbar(100 * d["diff"], y, xerr=[[100 * (d["diff"] - d["low"])], [100 * (d["high"] - d["diff"])]],
                            fmt="o", color=color, capsize=3, label=kind if i == 0 else None)
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(range(len(names))[::-1], names, fontsize=8)
    ax.set_xlabel("accuracy - defaults' accuracy, points (95 % user-clustered interval)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def drop_stale(recorded: dict, todo: list[tuple[str, str]]) -> None:
    """Forget the recorded intervals of the (benchmark, variant) runs about to be redone: all of a benchmark's
    when its defaults are redone (each interval is against them)."""
    for kind, name in todo:
        mine = recorded.setdefault(kind, {})
        if name == "defaults":
            mine.clear()
        else:
            mine.pop(name, None)


def write(out: dict, path: Path, pairs_dir: Path) -> None:
    """Write json, markdown and plot. A comparison whose per-pair files this machine lacks (a checkout other
    than the one that ran the variant) keeps the value recorded when it was measured."""
    old = out.get("vs_defaults", {})
    out["vs_defaults"] = {k: {n: c for n in out["variants"]
                              if (c := compare(pairs_dir, k, n, out["n_boot"]) or old.get(k, {}).get(n))}
                          for k in KINDS}
    out["load_avg_end"] = os.getloadavg()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=float))
    path.with_suffix(".md").write_text(markdown(out))
    plot(out, path.with_suffix(".png"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "bench", help="bench/quality.py's benchmark files")
    ap.add_argument("--out", type=Path, default=RESULTS / "sweep.json")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated (default: all, in this order)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time, one torch thread each (default: %(default)s)")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples (default: %(default)s)")
    ap.add_argument("--force", action="store_true",
                    help="rerun the variants named in --variants even if --out has them (delete --out for a fresh sweep)")
    args = ap.parse_args()
    asked = args.variants.split(",")
    names = ["defaults", *[n for n in asked if n != "defaults"]]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    command = command_line()
    out = {"commands": [*old.get("commands", []), command],
           "jobs": args.jobs, "n_boot": args.boot, "load_avg_start": old.get("load_avg_start", os.getloadavg()),
           "variants": sorted({*old.get("variants", []), *names}, key=list(VARIANTS).index),
           "results": old.get("results", {k: {} for k in KINDS}), "notes": old.get("notes", []),
           "vs_defaults": old.get("vs_defaults", {})}
    pairs_dir = args.data / "sweep"
    for kind in KINDS:  # bench/quality.py's seed-0 files
        write_benchmark(kind, args.data / kind)
    redo = set(asked) if args.force else set()
    todo = [(k, n) for n in names for k in KINDS if n not in out["results"][k] or n in redo]
    drop_stale(out["vs_defaults"], todo)
    print(f"{len(todo)} runs ({len(names)} variants x {len(KINDS)} benchmarks, minus those already done)", flush=True)
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_variant, k, n, args.data / k, pairs_dir): (k, n) for k, n in todo}
        for i, f in enumerate(as_completed(futures)):
            kind, name = futures[f]
            out["results"][kind][name] = f.result()
            write(out, args.out, pairs_dir)
            print(f"[{i + 1}/{len(todo)}] {kind} {name}: {out['results'][kind][name]['accuracy']:.4f}", flush=True)
    write(out, args.out, pairs_dir)
    print(markdown(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
