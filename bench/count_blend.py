"""Would blending GMTRouter with the per-user win count, per user by who predicted that user better, pay?

    python bench/quality.py                       # trains and saves each benchmark's model this reads
    python bench/count_blend.py                   # -> bench/results/count_blend.{json,md}

On the second benchmark's noisy users the per-user win count stays ahead of GMTRouter (family_seeds.md). Nothing
blind to the ratings tells them apart, but each user's own record does: which of the two predicted their earlier
comparisons better. This scores the saved model (bench/quality.py's checkpoint, unchanged) and the count on every
comparison of every split, each from the history before it as `prefstream eval` scores the test split, then
serves each test pair from the blend pi * a s_model + (1 - pi) * b s_count (a, b: logistic calibrations fitted on
the training split), with pi = sigmoid(eta * L_u + c) and L_u the user's log-likelihood ratio of the model over
the count on all their comparisons before this one (prequential). Such a blend keeps the sign guarantee: "A beat B"
raises both experts' A-over-B margin and moves pi towards the expert whose margin was larger. A fixed blend
(eta = 0) is the control. Scoring only (a few minutes on 2 cores); a diagnostic, not a served method.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, catalog_for, command_line, machine_facts, write_results  # noqa: E402
from trainer.baselines import PerUserMajority  # noqa: E402
from trainer.checkpoint import load_checkpoint  # noqa: E402
from trainer.data import load_dataset, online_samples  # noqa: E402
from trainer.evaluate import score_stream  # noqa: E402
from trainer.history import serving_history  # noqa: E402
from trainer.metrics import user_bootstrap  # noqa: E402

SETTINGS = ((0.0, 1.0), (0.0, 2.0), (0.25, 1.0), (0.5, 1.0), (0.5, 2.0), (1.0, 2.0))  # (eta, c)


def scored_pairs(data: Path, catalog: Path) -> list[tuple[str, int, str, list[tuple[float, float, int]]]]:
    """(user, time, split, [(model margin, count margin, 1 if the first answer won)]) of every comparison, in time
    order per user; both scored from the history before the comparison."""
    ckpt = next(iter(sorted(data.glob("gmtrouter-seed*-*.pt"))), None)
    if ckpt is None:
        raise SystemExit(f"no saved model in {data}: run python bench/quality.py first")
    ds = load_dataset({s: data / f"{s}.jsonl" for s in ("train", "valid", "test")}, catalog, progress=False)
    count = PerUserMajority().fit(ds)
    model = load_checkpoint(ckpt).model.eval()
    rows = []
    for split in ("train", "valid", "test"):
        with torch.no_grad():
            groups, scores = score_stream(model, online_samples(ds, split, turns=serving_history()))
        counted = count.score(online_samples(ds, split, history=10**9, embed=False))
        for g, s, c in zip(groups, scores, counted):
            r = np.asarray(g.ratings)
            pairs = [(float(s[a] - s[b]), float(c[a] - c[b]), int(r[a] > r[b]))
                     for a, b in itertools.combinations(range(len(r)), 2) if r[a] != r[b]]
            rows.append((g.user_id, int(g.timestamp), split, pairs))
    rows.sort(key=lambda x: (x[0], x[1]))
    return rows


def calibration(x: np.ndarray, y: np.ndarray) -> float:
    """The scale k maximising the log-likelihood of y under sigmoid(k x) (a grid: one number)."""
    grid = np.linspace(0.2, 20.0, 100)
    ll = [np.mean(y * -np.logaddexp(0, -k * x) + (1 - y) * -np.logaddexp(0, k * x)) for k in grid]
    return float(grid[int(np.argmax(ll))])


def blend(rows, a: float, b: float, eta: float, c: float) -> dict[str, list[tuple[str, float, float, float]]]:
    """Per test pair (user, model right, count right, blend right), ties half; L_u grows after each comparison."""
    def loglik(s: float, y: int) -> float:
        return -math.log1p(math.exp(-s if y else s)) if abs(s) < 30 else (0.0 if (s > 0) == bool(y) else -abs(s))

    def right(s: float, y: int) -> float:
        return 0.5 if s == 0 else float((s > 0) == bool(y))

    lam: dict[str, float] = defaultdict(float)
    out = []
    for user, _, split, pairs in rows:
        pi = 1.0 / (1.0 + math.exp(-(eta * lam[user] + c)))
        for m, n, y in pairs:
            if split == "test":
                out.append((user, right(m, y), right(n, y), right(pi * a * m + (1 - pi) * b * n, y)))
        lam[user] += sum(loglik(a * m, y) - loglik(b * n, y) for m, n, y in pairs)
    return out


def summary(pairs, family_of: dict[str, str]) -> dict:
    by: dict[str, list] = defaultdict(list)
    for p in pairs:
        by[family_of.get(p[0], "all")].append(p)
    out = {}
    for fam, ps in sorted(by.items()) + ([("all", pairs)] if len(by) > 1 else []):
        users = [p[0] for p in ps]
        arr = np.array([p[1:] for p in ps])
        diff = user_bootstrap(arr[:, 2], arr[:, 1], users, n_boot=1000)
        out[fam] = {"pairs": len(ps), "model": arr[:, 0].mean(), "count": arr[:, 1].mean(), "blend": arr[:, 2].mean(),
                    "blend_vs_count": diff, "blend_vs_model": user_bootstrap(arr[:, 2], arr[:, 0], users, n_boot=1000)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "bench")
    ap.add_argument("--benchmarks", default="default,families")
    ap.add_argument("--out", type=Path, default=RESULTS / "count_blend.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    res: dict = {"command": command_line(), "machine": machine_facts(), "benchmarks": {}}
    for kind in args.benchmarks.split(","):
        data = args.data / kind
        fams = json.loads((data / "users.json").read_text()) if (data / "users.json").exists() else {}
        rows = scored_pairs(data, catalog_for(kind, data))
        train = np.array([p for _, _, split, ps in rows if split == "train" for p in ps])
        a, b = calibration(train[:, 0], train[:, 2]), calibration(train[:, 1], train[:, 2])
        res["benchmarks"][kind] = {"calibration": [a, b], "settings": {
            f"eta={eta} c={c}": summary(blend(rows, a, b, eta, c), fams) for eta, c in SETTINGS}}
        print(kind, json.dumps(res["benchmarks"][kind]["settings"], default=float)[:400], flush=True)
    return write_results(args.out, res, markdown)


def markdown(res: dict) -> str:
    md = ["# GMTRouter blended with the per-user win count, per user", "",
          f"`{res['command']}`; load average {res['machine']['loadavg_1_5_15'][0]:.2f} at the start, "
          f"{res['loadavg_end'][0]:.2f} at the end. Accuracy on the test pairs; blend - count with a 95 % interval "
          "from resampling whole users. eta = 0: a fixed blend.", ""]
    for kind, r in res["benchmarks"].items():
        first = next(iter(r["settings"].values()))
        fams = list(first)
        md += [f"## {kind} (calibration a = {r['calibration'][0]:.2f}, b = {r['calibration'][1]:.2f})", "",
               "| setting | " + " | ".join(fams) + " |", "|---|" + "---|" * len(fams),
               "| GMTRouter | " + " | ".join(f"{first[f]['model']:.4f}" for f in fams) + " |",
               "| per-user count | " + " | ".join(f"{first[f]['count']:.4f}" for f in fams) + " |"]
        for name, s in r["settings"].items():
            md.append(f"| blend {name} | " + " | ".join(
                f"{s[f]['blend']:.4f} ({100 * s[f]['blend_vs_count']['diff']:+.2f} "
                f"[{100 * s[f]['blend_vs_count']['low']:+.2f}, {100 * s[f]['blend_vs_count']['high']:+.2f}])"
                for f in fams) + " |")
        md.append("")
    return "\n".join(md)


if __name__ == "__main__":
    sys.exit(main())
