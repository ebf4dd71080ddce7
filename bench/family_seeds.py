"""Is a family's gap to the per-user win count the model's, or the one benchmark draw's? Other draws of it.

    python bench/quality.py --predictions      # seed 0: bench/results/quality_families_predictions.jsonl
    python bench/family_seeds.py               # seeds 1-5 -> bench/results/family_seeds.{json,md}

bench/quality.py scores the second benchmark (trainer/families.py) as drawn with seed 0: 100 seen and 20 unseen
users per family, so a small family (sparse users have 6-15 turns) has a few hundred test pairs. This script
draws the same benchmark with other seeds (other users, other queries of the same source; the generator and its
settings unchanged), trains GMTRouter on each exactly as bench/quality.py does (`prefstream eval`'s defaults, the
training seed equal to the draw's), and scores it and the per-user win count per family. It then pools the
draws' test pairs, seed 0's from quality.py's predictions file included, and gives each family's difference
with a 95 % interval from resampling whole users. With ``--ablations no_hgt`` (the default) it also trains the
model without its HGT on each draw and gives what the HGT adds, per family. Each draw's model is saved beside its
data, so `python bench/family_ceiling.py --data var/bench/family_seeds/seed1` reads it, and a draw already
scored with those ablations is read back rather than retrained (``--force`` retrains). bench/robustness.py
scores draws 2 and 3 one at a time, on both generators and with short histories; this pools the families' draws
for the power a small family needs. A benchmark, not a test; run it alone (about 6 minutes a model on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import CATALOG, RESULTS, command_line, machine_facts, model_path  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.evaluate import run_evaluation  # noqa: E402
from trainer.families import write_benchmark  # noqa: E402
from trainer.history import serving_history  # noqa: E402
from trainer.metrics import pair_correct, user_bootstrap  # noqa: E402

METHODS = ("gmtrouter", "per_user_majority")
ABLATED = "no_hgt"  # the ablation whose per-family accuracies the tables give, when trained


def family_of(user: str) -> str:
    """``topic-0042`` and ``new-topic-0042`` -> ``topic`` (trainer/families.py's user ids)."""
    return user.removeprefix("new-").split("-", 1)[0]


def read_predictions(path: Path, seed: int) -> dict[str, dict[str, list]]:
    """{family: {"users": [N], "labels": [N], method: [N] correctness}} from a ``prefstream eval --predictions``
    file; user ids get the seed in front, so that pooled draws resample their users apart."""
    out: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            fam = out[family_of(r["user"])]
            fam["users"].append(f"s{seed}:{r['user']}")
            fam["labels"].append(r["label"])
            for m in (*METHODS, ABLATED):
                if m not in r["scores"]:
                    continue
                a, b = r["scores"][m]
                fam[m].append(float(pair_correct(np.array([a - b]), np.array([r["label"] == 1]))[0]))
    return out


def run_seed(seed: int, data: Path, history: int, ablations: list[str], force: bool) -> tuple[dict, Path]:
    """Draw the families benchmark with ``seed`` into ``data``, train and score as bench/quality.py does (and the
    named ablations); returns (the draw's summary, its predictions file). A draw already scored with the same
    history, at least those ablations and the same model config is read back unless ``force``."""
    preds, done = data / "predictions.jsonl", data / "summary.json"
    cfg = TrainConfig(seed=seed)
    if done.exists() and preds.exists() and not force:
        summary = json.loads(done.read_text())
        if summary["history_turns"] == history and set(ablations) <= set(summary["ablations"]) \
                and summary.get("model_config") == cfg.model.to_dict():
            return summary | {"read_back": True}, preds
    write_benchmark("families", data, seed=seed)
    report = run_evaluation(*(data / f"{s}.jsonl" for s in ("train", "valid", "test")), catalog=CATALOG,
                            config=cfg, history=history, ablations=ablations,
                            families=json.loads((data / "users.json").read_text()), predictions=preds,
                            save_model=model_path(data, cfg))
    summary = {"accuracy": report["gmtrouter"]["accuracy"], "history_turns": history,
               "per_user_majority": report["baselines"]["per_user_majority"]["accuracy"],
               "train_seconds": report["gmtrouter"]["train_seconds"], "ablations": report["ablations"],
               "families": report["families"], "model_config": cfg.model.to_dict(),
               "scored_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    done.write_text(json.dumps(summary, indent=1) + "\n")
    return summary, preds


def pooled(pairs: dict[int, dict], versus: str = "per_user_majority") -> dict[str, dict]:
    """{family (and "all"): accuracies and the user-bootstrap difference gmtrouter - ``versus``} over the test
    pairs of every draw that scored ``versus``."""
    keep = {s: p for s, p in pairs.items() if any(versus in v for v in p.values())}
    fams = sorted({f for p in keep.values() for f in p})
    out = {}
    for fam in [*fams, "all"]:
        sel = [v for p in keep.values() for f, v in p.items() if fam in (f, "all")]
        cols = {k: sum((v[k] for v in sel), []) for k in ("users", "gmtrouter", versus)}
        if not cols["users"]:
            continue
        boot = user_bootstrap(np.array(cols["gmtrouter"]), np.array(cols[versus]), cols["users"])
        out[fam] = {m: float(np.mean(cols[m])) for m in ("gmtrouter", versus)} | {"difference": boot,
                                                                              "draws": sorted(keep)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated draws to train and score here")
    ap.add_argument("--seed0", type=Path, default=RESULTS / "quality_families_predictions.jsonl",
                    help="seed 0's predictions file from bench/quality.py --predictions (pooled when it exists)")
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "bench" / "family_seeds")
    ap.add_argument("--ablations", default=ABLATED, help="comma-separated ablations to train on each draw too "
                    f"(trainer.evaluate.ABLATIONS; the tables give {ABLATED}'s)")
    ap.add_argument("--force", action="store_true", help="retrain draws already scored")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target machine has 2 cores)")
    ap.add_argument("--out", type=Path, default=RESULTS / "family_seeds.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out: dict = {"command": command_line(), "machine": machine_facts(), "history_turns": serving_history(),
                 "draws": {}}
    pairs: dict[int, dict] = {}
    if args.seed0.exists():
        pairs[0] = read_predictions(args.seed0, 0)
        out["draws"]["0"] = {"source": str(args.seed0.relative_to(ROOT) if args.seed0.is_relative_to(ROOT)
                                           else args.seed0)}
    t0 = time.perf_counter()
    for seed in (int(s) for s in args.seeds.split(",") if s):
        summary, preds = run_seed(seed, args.data / f"seed{seed}", out["history_turns"],
                                  [a for a in args.ablations.split(",") if a], args.force)
        pairs[seed] = read_predictions(preds, seed)
        out["draws"][str(seed)] = summary
        print(f"seed {seed}: " + ", ".join(f"{f} {v['gmtrouter']:.4f} vs {v['per_user_majority']:.4f}"
                                           for f, v in summary["families"].items()), flush=True)
    for seed, p in pairs.items():  # every draw's per-family accuracies, read the same way
        every = {k: sum((v[k] for v in p.values()), []) for k in next(iter(p.values()))}
        out["draws"][str(seed)]["by_family"] = {
            f: {m: float(np.mean(v[m])) for m in (*METHODS, ABLATED) if m in v} | {"pairs": len(v["users"])}
            for f, v in [*sorted(p.items()), ("all", every)]}
    out["pooled"] = pooled(pairs)
    out["hgt"] = pooled(pairs, ABLATED)  # what the HGT adds: gmtrouter - no_hgt, where no_hgt was trained
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["loadavg_end"] = list(os.getloadavg())
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(out))
    print(markdown(out))
    return 0


def markdown(out: dict) -> str:
    md = ["# Families benchmark, several draws: GMTRouter vs the per-user win count", "",
          f"`{out['command']}`. Draw 0 is bench/quality.py's (its predictions file); the others are trained and "
          f"scored here the same way. History {out['history_turns']} turns. Load average at start "
          f"{out['machine']['loadavg_1_5_15'][0]:.2f}, at end {out['loadavg_end'][0]:.2f}. Differences in points, "
          "with a 95 % interval from resampling whole users of the pooled draws.", "",
          "Accuracy, GMTRouter / per-user win count (test pairs):", ""]
    md += _table(out, out["pooled"], "per_user_majority")
    if out.get("hgt"):
        md += ["", f"What the HGT adds: accuracy, GMTRouter / the same model trained without it ({ABLATED}):", ""]
        md += _table(out, out["hgt"], ABLATED)
    return "\n".join(md) + "\n"


def _table(out: dict, pooled_: dict, versus: str) -> list[str]:
    seeds = [str(s) for s in next(iter(pooled_.values()))["draws"]]
    rows = ["| family | " + " | ".join(f"draw {s}" for s in seeds) + " | pooled | difference [95 %] |",
            "|---|" + "---|" * (len(seeds) + 2)]
    for f, p in pooled_.items():
        cells = []
        for s in seeds:
            v = out["draws"][s]["by_family"].get(f)
            cells.append(f"{v['gmtrouter']:.4f} / {v[versus]:.4f} ({v['pairs']})" if v else "")
        d = p["difference"]
        cells.append(f"{p['gmtrouter']:.4f} / {p[versus]:.4f} ({d['pairs']})")
        cells.append(f"{100 * d['diff']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]")
        rows.append(f"| {f} | " + " | ".join(cells) + " |")
    return rows


if __name__ == "__main__":
    sys.exit(main())
