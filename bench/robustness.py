"""Do the quality claims hold on benchmarks no choice was made on? Fresh seeds and short histories.

    python bench/robustness.py        # -> bench/results/robustness.{json,md,png}

bench/quality.py reports seed 0 of both simulators, and the design was chosen on those numbers (and on the
families' seed 1). This runs the same `prefstream eval` (its defaults, no ablations) on benchmarks drawn
with another seed, once with the generators' usual history lengths and once with every user cut to 20-35
queries (the held-out benchmark's users have few comparisons each), and reports GMTRouter's lead over the
per-user win count and the hierarchical logistic regression with a 95 % user-clustered bootstrap interval
(bench/quality_ci.py), overall and per family. A benchmark, not a test: nothing here asserts. Run it alone
(it records the load average); about 30 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import catalog_for, command_line, machine_facts  # noqa: E402
from bench.quality_ci import benchmark  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.evaluate import run_evaluation  # noqa: E402
from trainer.families import write_benchmark  # noqa: E402
from trainer.history import serving_history  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SHORT = {"turns_min": 20, "turns_max": 35}
#: name -> (generator, size overrides); the seed comes from --seed
BENCHMARKS = {"default": ("default", {}), "families": ("families", {}),
              "default_short": ("default", SHORT), "families_short": ("families", SHORT)}
METHODS = ("per_user_majority", "hierarchical_logistic")


def run_one(name: str, args) -> dict:
    generator, sizes = BENCHMARKS[name]
    data = args.data / f"{name}_seed{args.seed}"
    write_benchmark(generator, data, args.seed, **sizes)
    files = {s: data / f"{s}.jsonl" for s in ("train", "valid", "test")}
    fams = json.loads((data / "users.json").read_text()) if generator == "families" else None
    preds = data / "predictions.jsonl"
    t0 = time.perf_counter()
    catalog = catalog_for(generator, data)
    report = run_evaluation(files["train"], files["valid"], files["test"], catalog=catalog,
                            config=TrainConfig(), history=serving_history(), ablations=False, families=fams,
                            predictions=preds, progress=False)
    ci = benchmark(preds, generator == "families", args.boot, 0)
    return {"generator": generator, "seed": args.seed, "sizes": sizes, "data": report["data"],
            "held_out_crowd": report["held_out_crowd"],
            "accuracy": {"gmtrouter": report["gmtrouter"]["accuracy"],
                         **{m: report["baselines"][m]["accuracy"] for m in METHODS}},
            "auc": {"gmtrouter": report["gmtrouter"]["auc"], **{m: report["baselines"][m]["auc"] for m in METHODS}},
            "lead": ci["all"], "families": ci.get("families", {}), "best_step": report["gmtrouter"].get("best_step"),
            "seconds": round(time.perf_counter() - t0)}


def _row(name: str, r: dict) -> str:
    acc = r["accuracy"]
    cells = [f"{acc['gmtrouter']:.4f}"] + [f"{acc[m]:.4f}" for m in METHODS]
    for m in METHODS:
        b = r[m]
        cells.append(f"{100 * b['diff']:+.2f} [{100 * b['low']:+.2f}, {100 * b['high']:+.2f}]")
    return f"| {name} | " + " | ".join(cells) + f" | {r[METHODS[0]]['pairs']} |"


def _summary_row(name: str, r: dict) -> str:
    """The row of one benchmark of ``out["benchmarks"]`` (its leads are under "lead")."""
    return _row(name, {"accuracy": r["accuracy"], **{m: r["lead"][m] for m in METHODS}})


def markdown(out: dict) -> str:
    # runs from before the field read the training split's crowd (then the only protocol)
    crowd = next(iter(out["benchmarks"].values()), {}).get("held_out_crowd", "train")
    md = ["# Robustness: the quality claims on benchmarks no choice was made on", "", f"Command: `{out['command']}`",
          "", f"`prefstream eval` defaults (history {out['history_turns']} turns, held-out crowd `{crowd}`, no "
          f"ablations), seed {out['seed']}; "
          "short = every user cut to 20-35 queries (the families' sparse users keep 6-15). Leads in accuracy points "
          f"with a 95 % interval from {out['n_boot']} resamples of whole users.", "",
          "| benchmark | GMTRouter | per-user win count | hierarchical logistic | lead over count | lead over "
          "hierarchical | pairs |", "|---|---|---|---|---|---|---|"]
    for name, r in out["benchmarks"].items():
        md.append(_summary_row(name, r))
        for fam, fr in r["families"].items():
            md.append(_row(f"{name} / {fam}", fr))
    md += ["", out.get("reference", ""), "",
           f"Load average at start {out['load_avg_start'][0]:.2f}, at end {out['load_avg_end'][0]:.2f} "
           "(2 cores; nothing else ran)."]
    return "\n".join(md) + "\n"


def reference() -> str:
    """The seed-0 run's accuracies, read from bench/results/quality.json when this run ends (not quoted here)."""
    path = RESULTS / "quality.json"
    if not path.exists():
        return "Reference, seed 0: bench/results/quality.json not found."
    q = json.loads(path.read_text())
    d, f = q["default"], q["second_benchmark"]
    return (f"Reference, seed 0 (bench/results/quality.json, crowd {d.get('held_out_crowd', '?')}): default "
            f"{d['gmtrouter']['accuracy']:.4f} vs count {d['baselines']['per_user_majority']['accuracy']:.4f}; "
            f"families {f['gmtrouter']['accuracy']:.4f} vs {f['baselines']['per_user_majority']['accuracy']:.4f}.")


def plot(out: dict, path: Path) -> None:
    """GMTRouter's lead over the win count per benchmark and family, with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for name, r in out["benchmarks"].items():
        rows.append((name, r["lead"][METHODS[0]]))
        rows += [(f"{name} / {f}", fr[METHODS[0]]) for f, fr in r["families"].items()]
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(rows) + 1.2))
    ys = range(len(rows))[::-1]
    for y, (_, b) in zip(ys, rows):
        ax.errorbar(100 * b["diff"], y, xerr=[[100 * (b["diff"] - b["low"])], [100 * (b["high"] - b["diff"])]],
                    fmt="o", color="tab:blue" if b["low"] > 0 else "tab:orange", capsize=3)
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(list(ys), [n for n, _ in rows], fontsize=8)
    ax.set_xlabel("GMTRouter - per-user win count, accuracy points (95 % interval)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "bench" / "robust", help="where the files go")
    ap.add_argument("--out", type=Path, default=RESULTS / "robustness.json")
    ap.add_argument("--seed", type=int, default=2, help="simulator seed (0 is bench/quality.py's; 1 was developed on)")
    ap.add_argument("--benchmarks", default=",".join(BENCHMARKS), help=f"comma-separated of {', '.join(BENCHMARKS)}")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target machine has 2 cores)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = {"command": command_line(),
           "seed": args.seed, "history_turns": serving_history(), "n_boot": args.boot,
           "load_avg_start": os.getloadavg(), "machine": machine_facts(), "benchmarks": {}}
    names = args.benchmarks.split(",")
    for i, name in enumerate(names):
        print(f"[{i + 1}/{len(names)}] {name} (seed {args.seed})", flush=True)
        out["benchmarks"][name] = run_one(name, args)
        print(_summary_row(name, out["benchmarks"][name]), flush=True)
    out["load_avg_end"] = os.getloadavg()
    out["reference"] = reference()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=float))
    args.out.with_suffix(".md").write_text(markdown(out))
    plot(out, args.out.with_suffix(".png"))
    print(markdown(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
