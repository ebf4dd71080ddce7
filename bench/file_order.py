"""What `prefstream eval` scores when the files carry no time stamps, in three line orders.

    python bench/file_order.py            # -> bench/results/file_order.{json,md}

GMTRouter's own JSONL format has no time stamp: a line is (question_id, turn, judge, model, conversation). The
simulator adds `tstamp` (epoch ms), and every result in quality.md reads it. A file without it is read in its line
order (trainer/data.py: the n-th line of a split is time n, train before valid before test), and that order then
decides what each test comparison may read (the turns before it), how old each of them is (the posterior's
recency weight) and which of other users' ratings the crowd term sees. This bench strips `tstamp` and `task` from
the default benchmark's three files and evaluates, with eval's defaults and no ablations:
- stamped: the files as written (the reference; quality.md's run of the same code and data);
- time order: no stamps, the lines in the order written (by time over all users);
- by user: no stamps, each file sorted by (judge, question_id, turn, model), as a per-user dump lists them
  (the simulator's conversation ids count up in time within a user);
- shuffled: no stamps, each file's lines in a random order (seed 0): the order says nothing.
A benchmark, not a test: nothing here asserts. Run it alone (about 7 minutes a variant on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, command_line, machine_facts  # noqa: E402
from trainer.evaluate import run_evaluation  # noqa: E402
from trainer.families import write_benchmark  # noqa: E402
from trainer.history import serving_history  # noqa: E402
from trainer.train import TrainConfig  # noqa: E402

SPLITS = ("train", "valid", "test")
VARIANTS = ("stamped", "time order", "by user", "shuffled")
METHODS = ("gmtrouter", "per_user_majority", "hierarchical_logistic", "global_best")


def strip(line: str) -> dict:
    rec = json.loads(line)
    rec.pop("tstamp", None)
    rec.pop("task", None)
    return rec


def write_variant(src: Path, dst: Path, variant: str, seed: int) -> None:
    """The three files of ``src`` as ``variant`` has them, into ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        lines = (src / f"{split}.jsonl").read_text().splitlines()
        if variant == "stamped":
            recs = [json.loads(line) for line in lines]
        else:
            recs = [strip(line) for line in lines]
        if variant == "by user":
            recs.sort(key=lambda r: (r["judge"], r["question_id"], r["turn"], r["model"]))
        elif variant == "shuffled":
            random.Random(f"{seed}:{split}").shuffle(recs)
        (dst / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (dst / "llm_catalog.json").write_text((src / "llm_catalog.json").read_text())


def report(out: dict) -> str:
    lines = ["# `prefstream eval` on files without time stamps", "",
             f"Command: `{out['command']}`. The default benchmark (seed {out['seed']}), eval's defaults, no "
             f"ablations. Load average {out['machine']['loadavg_1_5_15'][0]:.2f} at the start, "
             f"{out['load_end'][0]:.2f} at the end.", "",
             "| files | " + " | ".join(METHODS) + " | GMTRouter - count (pts) | test pairs |",
             "|---|" + "---|" * (len(METHODS) + 2)]
    for name, res in out["variants"].items():
        acc = [res["accuracy"][m] for m in METHODS]
        lines.append(f"| {name} | " + " | ".join(f"{a:.4f}" for a in acc)
                     + f" | {100 * (acc[0] - acc[1]):+.2f} | {res['pairs']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "bench" / "file_order", help="where the files go")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    ap.add_argument("--out", type=Path, default=RESULTS / "file_order.json")
    args = ap.parse_args()
    out = {"command": command_line(), "seed": args.seed, "machine": machine_facts(), "variants": {}}
    src = args.data / "default"
    write_benchmark("default", src, args.seed)
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            ap.error(f"unknown variant {variant!r}")
        dst = args.data / variant.replace(" ", "_")
        write_variant(src, dst, variant, args.seed)
        t0 = time.time()
        res = run_evaluation(dst / "train.jsonl", dst / "valid.jsonl", dst / "test.jsonl",
                             catalog=dst / "llm_catalog.json", config=TrainConfig(seed=args.seed),
                             history=serving_history(), ablations=False)
        m = {"gmtrouter": res["gmtrouter"], **res["baselines"]}
        out["variants"][variant] = {"accuracy": {k: m[k]["accuracy"] for k in METHODS},
                                    "auc": {k: m[k]["auc"] for k in METHODS},
                                    "pairs": res["data"]["test_pairs"], "seconds": time.time() - t0}
        print(variant, out["variants"][variant], flush=True)
    out["load_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    args.out.with_suffix(".md").write_text(report(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
