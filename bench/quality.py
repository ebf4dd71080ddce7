"""Quality benchmark: GMTRouter vs baselines on simulated users over real LLM outcomes.

    python bench/quality.py                 # simulate (seed 0) -> train + evaluate -> bench/results/quality.*

Writes bench/results/quality.json (+ .md table, cold-start and cost/quality PNGs). Also measures one
training step over 1,000 users, the full training time, and scorer throughput per batch size on this
machine's CPU threads. A benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.data import load_dataset, online_samples, training_samples  # noqa: E402
from trainer.evaluate import best_baseline, plot, run_evaluation, table  # noqa: E402
from trainer.model import GMTRouter, GMTRouterConfig  # noqa: E402
from trainer.train import TrainConfig, _loss, last_turns, make_batch, truncate  # noqa: E402


def step_time(ds, cfg: TrainConfig, users: int = 1000, repeats: int = 3) -> dict:
    """Seconds of one optimizer step (batch build + forward + backward + update) over ``users`` samples."""
    tr = training_samples(ds, "train", window=cfg.k_max)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = GMTRouter(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    table_ = {k: v.embedding for k, v in ds.llms.items()}
    times = []
    for _ in range(repeats + 1):
        chunk = [tr[i] for i in rng.choice(len(tr), min(users, len(tr)), replace=False)]
        t0 = time.perf_counter()
        subs = [truncate(s.visible, int(k)) for s, k in zip(chunk, rng.integers(cfg.k_min, cfg.k_max + 1, len(chunk)))]
        b = make_batch(subs, [s.targets for s in chunk], table_, cfg.model.reverse_edges)
        loss = _loss(model(b), [g for s in chunk for g in s.targets], cfg.loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return {"users": len(chunk), "seconds_median": float(np.median(times[1:])), "seconds": times[1:]}


def scorer_throughput(ds, model: GMTRouter, history_turns: int = 10, batch_sizes=(1, 8, 32, 64, 128, 256),
                      seconds: float = 3.0) -> dict:
    """Decisions per second of Scorer.score_batch for requests with ``history_turns`` visible turns and
    all catalog LLMs as candidates (graph building included)."""
    from trainer.scorer import Scorer

    sc = Scorer(model, "bench")
    samples = online_samples(ds, "test", history=history_turns)
    cands = list(ds.llms.values())
    rng = np.random.default_rng(0)
    out = {}
    for bs in batch_sizes:
        idx = rng.choice(len(samples), bs, replace=True)
        items = []
        for i in idx:
            s = samples[i]
            items.append((last_turns(s.visible, history_turns), s.targets[0].query_emb, cands))
        sc.score_batch(items)  # warm up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            sc.score_batch(items)
            n += bs
        dt = time.perf_counter() - t0
        out[str(bs)] = {"decisions_per_s": n / dt, "ms_per_batch": 1000 * dt / (n / bs)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "bench" / "sim", help="simulated data directory")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=TrainConfig.steps)
    ap.add_argument("--history", type=int, default=30, help="visible groups before each prediction")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target machine has 2 cores)")
    ap.add_argument("--no-ablations", action="store_true")
    ap.add_argument("--throughput-only", action="store_true",
                    help="only measure scorer throughput on the simulated test histories; print JSON, write nothing")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.throughput_only:
        files = {s: args.data / f"{s}.jsonl" for s in ("train", "valid", "test")}
        ds = load_dataset(files, args.data / "llm_catalog.json", progress=False)
        print(json.dumps({"threads": args.threads, "scorer_throughput": scorer_throughput(ds, GMTRouter(GMTRouterConfig()))},
                         indent=1))
        return 0

    from trainer.simulate import SimConfig, Simulator

    sim = Simulator(SimConfig(seed=args.seed))
    if not (args.data / "test.jsonl").exists():
        sim.write_gmtrouter(args.data)
    ceilings = sim.ceilings("test")
    cfg = TrainConfig(model=GMTRouterConfig(), steps=args.steps, k_max=args.history, seed=args.seed)
    files = {s: args.data / f"{s}.jsonl" for s in ("train", "valid", "test")}
    t0 = time.perf_counter()
    report = run_evaluation(files["train"], files["valid"], files["test"], catalog=args.data / "llm_catalog.json",
                            config=cfg, history=args.history, ablations=not args.no_ablations)
    eval_s = time.perf_counter() - t0
    ds = load_dataset(files, args.data / "llm_catalog.json", progress=False)
    step = step_time(ds, cfg)
    # the scorer is measured on a model with the benchmark's shape (weights do not change its cost)
    thr = scorer_throughput(ds, GMTRouter(cfg.model))
    d = report["data"]
    bb_name, bb = best_baseline(report)
    out = {
        "gmtrouter": report["gmtrouter"],
        "baselines": report["baselines"],
        "cold_start": {k: v["gmtrouter"]["accuracy"] for k, v in report["cold_start"].items()},
        "cold_start_detail": report["cold_start"],
        "slices": report.get("slices", {}),
        "cost_quality": report["cost_quality"],
        "best_baseline": {"name": bb_name, "accuracy": bb["accuracy"], "auc": bb["auc"],
                          "delta_accuracy": report["gmtrouter"]["accuracy"] - bb["accuracy"],
                          "delta_auc": report["gmtrouter"]["auc"] - bb["auc"]},
        "data": (f"prefstream simulator seed {args.seed} over ../shared/data/llmrouter (real 0/1 outcomes of "
                 f"{d['llms']} LLMs on 5,608 queries): {d['users_seen']} seen + {d['users_unseen']} unseen users, "
                 f"groups train/valid/test = {d['groups']['train']}/{d['groups']['valid']}/{d['groups']['test']}, "
                 f"{d['test_pairs']} test pairs; each test group predicted from the {args.history} groups before it"),
        "ceilings": ceilings,
        "train_config": report["train_config"],
        "timing": {
            "full_training_s": report["gmtrouter"]["train_seconds"],
            "train_step_s": report["gmtrouter"]["step_seconds"],
            "train_step_1000_users_s": step["seconds_median"],
            "evaluation_total_s": eval_s,
            "scorer_throughput": thr,
            "torch_threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
        },
        "command": " ".join(shlex.quote(a) for a in ["python", "bench/quality.py", *sys.argv[1:]]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=float))
    md = [f"# Quality benchmark\n", f"Command: `{out['command']}`\n", f"Data: {out['data']}\n", table(report), "",
          f"Best baseline: **{bb_name}**; GMTRouter - best: {out['best_baseline']['delta_accuracy']:+.4f} accuracy, "
          f"{out['best_baseline']['delta_auc']:+.4f} AUC.", "",
          "Ceilings on the same test pairs (routers that know every user's hidden parameters): "
          + ", ".join(f"{k} {v:.4f}" for k, v in ceilings.items()) + " (see docs/simulator.md).", "",
          f"Timing (torch threads = {torch.get_num_threads()}): full training {out['timing']['full_training_s']:.0f} s "
          f"({cfg.steps} steps); one step over 1,000 users {step['seconds_median']:.2f} s; whole evaluation "
          f"{eval_s:.0f} s.", "", "Scorer throughput (10 visible turns, 9 candidates):", "",
          "| batch | decisions/s | ms/batch |", "|---|---|---|"]
    md += [f"| {k} | {v['decisions_per_s']:.0f} | {v['ms_per_batch']:.1f} |" for k, v in thr.items()]
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    plot(report, args.out.with_suffix(""))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
