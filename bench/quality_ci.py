"""How sure are the quality claims? Paired, user-clustered bootstrap intervals of GMTRouter's accuracy lead.

    python bench/quality.py --predictions     # writes the per-pair prediction files this reads
    python bench/quality_ci.py                # -> bench/results/quality_ci.{json,md}

For each benchmark's prediction file (one line per test pair, every method's scores), and on the second
benchmark for each user family, the accuracy difference GMTRouter - method on the same pairs, with a 95 %
interval from resampling whole users 2,000 times (fixed seed): a user's pairs share one taste and one
history, so resampling pairs would overstate the certainty. Methods: the per-user win count, the
hierarchical logistic regression and, where the file holds them, the ablations. Reads files, trains nothing:
seconds on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.metrics import pair_correct, user_bootstrap  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BASELINES = ("per_user_majority", "hierarchical_logistic")


def family(user_id: str) -> str:
    """The second benchmark's user ids start with their family (trainer/families.py): ``new-topic-0042``."""
    return user_id.removeprefix("new-").split("-", 1)[0]


def load(path: Path) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """(users [N], labels [N], {method: score difference a - b [N]}) of a predictions file."""
    users, labels, diffs = [], [], defaultdict(list)
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            users.append(row["user"])
            labels.append(row["label"])
            for name, (a, b) in row["scores"].items():
                diffs[name].append(a - b)
    return users, np.array(labels, bool), {k: np.array(v, np.float64) for k, v in diffs.items()}


def compare(users: list[str], labels: np.ndarray, diffs: dict[str, np.ndarray], against: list[str],
            n_boot: int, seed: int) -> dict:
    """{method: user_bootstrap of GMTRouter - method} plus each method's accuracy on these pairs."""
    correct = {m: pair_correct(diffs[m], labels) for m in ["gmtrouter", *against]}
    out = {"accuracy": {m: float(c.mean()) for m, c in correct.items()}}
    for m in against:
        out[m] = user_bootstrap(correct["gmtrouter"], correct[m], users, n_boot, seed)
    return out


def benchmark(path: Path, families: bool, n_boot: int, seed: int) -> dict:
    users, labels, diffs = load(path)
    ablations = [m for m in diffs if m.startswith(("no_", "hgt_", "dot_"))]
    against = [m for m in BASELINES if m in diffs] + ablations
    res = {"file": str(path.relative_to(ROOT)), "all": compare(users, labels, diffs, against, n_boot, seed)}
    if families:
        fam = np.array([family(u) for u in users])
        res["families"] = {}
        for f in sorted(set(fam)):
            idx = np.flatnonzero(fam == f)
            res["families"][f] = compare([users[i] for i in idx], labels[idx], {k: v[idx] for k, v in diffs.items()},
                                         [m for m in BASELINES if m in diffs], n_boot, seed)
    return res


def _row(name: str, r: dict, method: str) -> str:
    b = r[method]
    return (f"| {name} | {method} | {r['accuracy']['gmtrouter']:.4f} | {r['accuracy'][method]:.4f} | "
            f"{100 * b['diff']:+.2f} | [{100 * b['low']:+.2f}, {100 * b['high']:+.2f}] | {b['p_above_0']:.3f} | "
            f"{b['users']} | {b['pairs']} |")


def markdown(out: dict) -> str:
    md = ["# How sure are the quality claims: user-clustered bootstrap", "", f"Command: `{out['command']}`", "",
          f"GMTRouter minus each method, accuracy points on the same test pairs; 95 % interval from {out['n_boot']} "
          "resamples of whole users (seed 0); P(> 0) = share of resamples where GMTRouter leads.", "",
          "| benchmark / family | method | GMTRouter | method | lead (pts) | 95 % interval | P(> 0) | users | pairs |",
          "|---|---|---|---|---|---|---|---|---|"]
    for bench, res in out["benchmarks"].items():
        for m in [k for k in res["all"] if k != "accuracy"]:
            md.append(_row(bench, res["all"], m))
        for f, r in res.get("families", {}).items():
            for m in [k for k in r if k != "accuracy"]:
                md.append(_row(f"{bench} / {f}", r, m))
    md += ["", f"Load average at start {out['load_avg_start'][0]:.2f} (2 cores; reads files only)."]
    return "\n".join(md) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the prediction files and the output")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = {"command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
           "load_avg_start": os.getloadavg(), "n_boot": args.boot, "benchmarks": {}}
    for bench in ("default", "families"):
        path = args.results / f"quality_{bench}_predictions.jsonl"
        if not path.exists():
            raise SystemExit(f"quality_ci: {path} is missing; run `python bench/quality.py --predictions` first")
        out["benchmarks"][bench] = benchmark(path, bench == "families", args.boot, args.seed)
    (args.results / "quality_ci.json").write_text(json.dumps(out, indent=1))
    (args.results / "quality_ci.md").write_text(markdown(out))
    print(markdown(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
