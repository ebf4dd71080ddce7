"""Is a benchmark's accuracy a training seed's luck? `prefstream eval`'s defaults trained with other seeds.

    python bench/quality.py --predictions       # training seed 0: bench/results/quality_{kind}_predictions.jsonl
    python bench/train_seeds.py                 # seeds 1 and 2 on the default benchmark -> train_seeds.{json,md}
    python bench/train_seeds.py --benchmark families --seeds 1,2 --out bench/results/train_seeds_families.json

bench/quality.py trains GMTRouter once (training seed 0) on each benchmark, and the issue's targets (0.77 accuracy
on the default benchmark, 3 points over the per-user win count) are read from that one model. This trains the same
defaults on the same files with other training seeds (the initial weights, the order of the samples and the
history cuts change; the data do not), scores the same test pairs, and gives per seed the accuracy, the lead over
the per-user win count and the difference from seed 0's model, with 95 % intervals from resampling whole users.
bench/family_seeds.py varies the benchmark draw and the training seed together; this varies the training alone.
Each seed's predictions are kept under ``--work`` and read back when their model config matches (``--force``
retrains). A benchmark, not a test; run it alone (about 6 minutes a model on 2 cores, no ablations).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, catalog_for, command_line, machine_facts, write_results  # noqa: E402
from bench.family_seeds import family_of  # noqa: E402
from bench.quality_ci import load  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.evaluate import run_evaluation  # noqa: E402
from trainer.history import serving_history  # noqa: E402
from trainer.metrics import pair_correct, user_bootstrap  # noqa: E402

COUNT = "per_user_majority"


def train_seed(kind: str, data: Path, work: Path, seed: int, force: bool) -> Path:
    """The predictions file of the defaults trained with ``seed`` on ``data``'s files (trained unless a file with
    the same model config is there)."""
    cfg = TrainConfig(seed=seed)
    preds, meta = work / f"{kind}_seed{seed}.jsonl", work / f"{kind}_seed{seed}.json"
    if not force and preds.exists() and meta.exists() and json.loads(meta.read_text()) == cfg.to_dict():
        return preds
    work.mkdir(parents=True, exist_ok=True)
    fams = data / "users.json"
    run_evaluation(*(data / f"{s}.jsonl" for s in ("train", "valid", "test")),
                   catalog=catalog_for(kind, data), config=cfg,
                   history=serving_history(), ablations=False, predictions=preds,
                   families=json.loads(fams.read_text()) if fams.exists() else None)
    meta.write_text(json.dumps(cfg.to_dict()))
    return preds


def compare(files: dict[int, Path]) -> dict:
    """{seed: accuracy, lead over the count and difference from seed 0 (user bootstrap)} on the same test pairs."""
    loaded = {s: load(p) for s, p in files.items()}
    users, labels, base = loaded[0]
    ref = pair_correct(base["gmtrouter"], labels)
    count = pair_correct(base[COUNT], labels)
    out = {}
    for s, (u, y, diffs) in sorted(loaded.items()):
        if u != users or not np.array_equal(y, labels):
            raise SystemExit(f"train_seeds: seed {s}'s test pairs differ from seed 0's ({files[s]})")
        c = pair_correct(diffs["gmtrouter"], labels)
        out[s] = {"accuracy": float(c.mean()), "per_user_majority": float(count.mean()),
                  "vs_count": user_bootstrap(c, count, users), "vs_seed0": user_bootstrap(c, ref, users),
                  "families": per_family(c, count, users)}
    return out


def per_family(correct: np.ndarray, count: np.ndarray, users: list[str]) -> dict:
    """{family: accuracy, the count's and the lead over it (user bootstrap)} for the second benchmark's user
    families (bench.family_seeds.family_of); empty when the users are of one family (the default benchmark)."""
    fam = np.array([family_of(u) for u in users])
    if len(set(fam)) < 2:
        return {}
    out = {}
    for f in sorted(set(fam)):
        m = fam == f
        out[f] = {"accuracy": float(correct[m].mean()), "per_user_majority": float(count[m].mean()),
                  "vs_count": user_bootstrap(correct[m], count[m], [u for u, k in zip(users, m) if k])}
    return out


def markdown(res: dict) -> str:
    pts = lambda b: f"{100 * b['diff']:+.2f} [{100 * b['low']:+.2f}, {100 * b['high']:+.2f}]"  # noqa: E731
    lines = [f"# {res['benchmark']} benchmark: `prefstream eval`'s defaults, one training seed at a time", "",
             f"`{res['command']}`; load average {res['machine']['loadavg_1_5_15'][0]:.2f} at the start, "
             f"{res['loadavg_end'][0]:.2f} at the end. Same benchmark files and test pairs for every seed; seed 0 is "
             f"bench/quality.py's model (`{res['seed0']}`). Points, 95 % interval from resampling whole users.", "",
             "| training seed | accuracy | per-user win count | lead over the count | minus seed 0 |",
             "|---|---|---|---|---|"]
    for s, r in res["seeds"].items():
        lines.append(f"| {s} | {r['accuracy']:.4f} | {r['per_user_majority']:.4f} | {pts(r['vs_count'])} | "
                     f"{pts(r['vs_seed0']) if str(s) != '0' else '-'} |")
    accs = [r["accuracy"] for r in res["seeds"].values()]
    lines += ["", f"Mean over the {len(accs)} seeds {np.mean(accs):.4f} "
              f"(lowest {min(accs):.4f}, highest {max(accs):.4f})."]
    fams = sorted({f for r in res["seeds"].values() for f in r.get("families", {})})
    if fams:
        seeds = list(res["seeds"])
        lines += ["", "Per family: accuracy (lead over the per-user win count, points [95 %]):", "",
                  "| family | per-user win count | " + " | ".join(f"seed {s}" for s in seeds) + " |",
                  "|---|---|" + "---|" * len(seeds)]
        for f in fams:
            rows = [res["seeds"][s]["families"][f] for s in seeds]
            lines.append(f"| {f} | {rows[0]['per_user_majority']:.4f} | "
                         + " | ".join(f"{r['accuracy']:.4f} ({pts(r['vs_count'])})" for r in rows) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmark", choices=("default", "families"), default="default")
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "bench", help="bench/quality.py's benchmark files")
    ap.add_argument("--seeds", default="1,2", help="comma-separated training seeds to train here (0 is quality.py's)")
    ap.add_argument("--work", type=Path, default=ROOT / "var" / "bench" / "train_seeds", help="predictions kept here")
    ap.add_argument("--force", action="store_true", help="retrain seeds already scored")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target machine has 2 cores)")
    ap.add_argument("--out", type=Path, default=RESULTS / "train_seeds.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    seed0 = RESULTS / f"quality_{args.benchmark}_predictions.jsonl"
    if not seed0.exists():
        raise SystemExit(f"train_seeds: {seed0} is missing; run `python bench/quality.py --predictions` first")
    res = {"command": command_line(), "machine": machine_facts(), "benchmark": args.benchmark,
           "seed0": str(seed0.relative_to(ROOT))}
    files = {0: seed0} | {s: train_seed(args.benchmark, args.data / args.benchmark, args.work, s, args.force)
                          for s in map(int, args.seeds.split(","))}
    res["seeds"] = compare(files)
    return write_results(args.out, res, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
