"""Quality benchmark: GMTRouter, its ablations and the baselines on two simulated benchmarks.

    python bench/quality.py        # both benchmarks -> bench/results/quality.{json,md} + PNGs

1. default: `prefstream simulate` (seed 0), users with one kind of taste (docs/simulator.md);
2. families: `prefstream simulate --families` (seed 0), six user families generated differently
   (trainer/families.py, docs/simulator.md "Families").
Both are evaluated exactly as `prefstream eval` does it (same defaults: history, training, baselines).
Also measures the full training time, one step over 1,000 users and scorer throughput. A benchmark, not a
test: nothing here asserts. Run it alone on the machine (it records the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import catalog_for, model_path  # noqa: E402
from trainer.data import config_samples, load_dataset, online_samples  # noqa: E402
from trainer.evaluate import best_baseline, run_evaluation  # noqa: E402
from trainer.families import write_benchmark  # noqa: E402
from trainer.history import serving_history  # noqa: E402
from trainer.model import GMTRouter, GMTRouterConfig  # noqa: E402
from trainer.report import plot, table  # noqa: E402
from trainer.train import TrainConfig, llm_table, pair_loss, training_batch  # noqa: E402



def step_time(ds, cfg: TrainConfig, users: int = 1000, repeats: int = 3) -> dict:
    """Seconds of one optimizer step (batch build + forward + backward + update) over ``users`` samples."""
    tr = config_samples(ds, cfg)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = GMTRouter(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    table_ = llm_table(ds.llms, cfg.model.llm_prices)
    times = []
    for _ in range(repeats + 1):
        chunk = [tr[i] for i in rng.choice(len(tr), min(users, len(tr)), replace=False)]
        t0 = time.perf_counter()
        b, groups = training_batch(chunk, rng.integers(cfg.k_min, cfg.k_max + 1, len(chunk)), table_, cfg,
                                   cfg.model.reverse_edges)
        loss = pair_loss(model(b), groups, cfg.loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return {"users": len(chunk), "seconds_median": float(np.median(times[1:])), "seconds": times[1:]}


def scorer_throughput(ds, model: GMTRouter, history_turns: int, batch_sizes=(1, 8, 32, 64, 128),
                      seconds: float = 3.0) -> dict:
    """Decisions per second of Scorer.score_batch for requests with ``history_turns`` visible turns and
    all catalog LLMs as candidates (graph building included)."""
    from trainer.scorer import Scorer

    sc = Scorer(model, "bench")
    samples = online_samples(ds, "test", turns=history_turns)
    cands = list(ds.llms.values())
    rng = np.random.default_rng(0)
    out = {}
    for bs in batch_sizes:
        items = [(samples[i].visible, samples[i].targets[0].query_emb, cands)
                 for i in rng.choice(len(samples), bs, replace=True)]
        sc.score_batch(items)  # warm up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            sc.score_batch(items)
            n += bs
        dt = time.perf_counter() - t0
        out[str(bs)] = {"decisions_per_s": n / dt, "ms_per_batch": 1000 * dt / (n / bs)}
    return out


def simulate(kind: str, out: Path, seed: int) -> dict:
    """Write the benchmark's files once (trainer.families.write_benchmark: a folder holding another draw's files
    raises); returns the ceilings of its simulator."""
    return write_benchmark(kind, out, seed).ceilings("test")


def data_folder(root: Path, kind: str, seed: int) -> Path:
    """Where the benchmark ``kind`` drawn with ``seed`` is written: ``root``/kind for seed 0 (the files other
    benches read), ``root``/kind_seedN otherwise, so that each draw has its own folder (one folder holds one
    draw: :func:`simulate` refuses another's)."""
    return root / (kind if seed == 0 else f"{kind}_seed{seed}")


def evaluate(kind: str, args, history: int) -> tuple[dict, dict]:
    data = data_folder(args.data, kind, args.seed)
    ceilings = simulate(kind, data, args.seed)
    files = {s: data / f"{s}.jsonl" for s in ("train", "valid", "test")}
    fams = json.loads((data / "users.json").read_text()) if (data / "users.json").exists() else None
    catalog = catalog_for(kind, data)
    cfg = TrainConfig(model=GMTRouterConfig(), seed=args.seed, steps=args.steps)
    ablate = not args.no_ablations and kind in args.ablations_on.split(",")
    report = run_evaluation(files["train"], files["valid"], files["test"], catalog=catalog, config=cfg,
                            history=history, ablations=ablate, diagnostics=ablate, families=fams,
                            predictions=args.out.parent / f"quality_{kind}_predictions.jsonl" if args.predictions else None,
                            save_model=model_path(data, cfg))
    report["ceilings"] = ceilings
    return report, files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "bench", help="where the simulated files go")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality.json")
    ap.add_argument("--seed", type=int, default=0, help="the benchmark's draw and the training seed (draws other "
                    "than 0 go to DATA/KIND_seedN)")
    ap.add_argument("--steps", type=int, default=TrainConfig.steps)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target machine has 2 cores)")
    ap.add_argument("--benchmarks", default="default,families", help="comma-separated: default, families")
    ap.add_argument("--no-ablations", action="store_true")
    ap.add_argument("--ablations-on", default="default", help="benchmarks that also train the ablations")
    ap.add_argument("--predictions", action="store_true", help="also write per-pair prediction files")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)  # the predictions files are written beside it first
    load0 = os.getloadavg()
    history = serving_history()
    out: dict = {"command": " ".join(shlex.quote(a) for a in ["python", "bench/quality.py", *sys.argv[1:]]),
                 "history_turns": history, "load_avg_start": load0}
    md = ["# Quality benchmark\n", f"Command: `{out['command']}`\n"]
    for kind in args.benchmarks.split(","):
        report, files = evaluate(kind, args, history)
        ds = load_dataset(files, catalog_for(kind, files["train"].parent), progress=False)
        bb_name, bb = best_baseline(report)
        summary = {k: report[k] for k in ("gmtrouter", "baselines", "ablations", "slices", "cold_start", "data",
                                          "ceilings", "train_config", "cost_quality", "families",
                                          "hierarchical_logistic_topics", "held_out_crowd") if k in report}
        summary["best_baseline"] = {"name": bb_name, "accuracy": bb["accuracy"], "auc": bb["auc"],
                                    "delta_accuracy": report["gmtrouter"]["accuracy"] - bb["accuracy"]}
        summary["eval_seconds"] = report["eval_seconds"]
        out["second_benchmark" if kind == "families" else kind] = summary
        md += [f"## {kind} benchmark\n", table(report), "",
               f"Best baseline: **{bb_name}**; GMTRouter - best: {summary['best_baseline']['delta_accuracy']:+.4f} "
               f"accuracy. Ceilings (routers that know every user's hidden parameters): "
               + ", ".join(f"{k} {v:.4f}" for k, v in report["ceilings"].items()) + ".", ""]
        plot(report, args.out.with_name(f"quality_{kind}"))
        if kind == "default":
            cfg = TrainConfig(model=GMTRouterConfig())
            out["timing"] = {"full_training_s": report["gmtrouter"]["train_seconds"],
                             "train_step_s": report["gmtrouter"]["step_seconds"],
                             "train_step_1000_users_s": step_time(ds, cfg)["seconds_median"],
                             "scorer_throughput": scorer_throughput(ds, GMTRouter(cfg.model), history),
                             "torch_threads": torch.get_num_threads(),
                             "cpu": platform.processor() or platform.machine()}
    # the top-level keys: the default benchmark's tables, the second benchmark's families
    for key in ("gmtrouter", "baselines", "ablations", "best_baseline"):
        if "default" in out:
            out[key] = out["default"][key]
    if "second_benchmark" in out:
        out["families"] = out["second_benchmark"].get("families", {})  # {family: {method: accuracy}}
    out["load_avg_end"] = os.getloadavg()
    if "timing" in out:
        t = out["timing"]
        md += [f"Timing (torch threads = {t['torch_threads']}): full training {t['full_training_s']:.0f} s; one step "
               f"over 1,000 users {t['train_step_1000_users_s']:.2f} s.", "",
               f"Scorer throughput ({history} visible turns, all catalog LLMs as candidates):", "",
               "| batch | decisions/s | ms/batch |", "|---|---|---|"]
        md += [f"| {k} | {v['decisions_per_s']:.0f} | {v['ms_per_batch']:.1f} |" for k, v in t["scorer_throughput"].items()]
    md += ["", f"Load average at start {load0[0]:.2f}, at end {out['load_avg_end'][0]:.2f} (2 cores)."]
    args.out.write_text(json.dumps(out, indent=1, default=float))
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
