"""Could knowing which users are noisy make GMTRouter beat counting on them? An optimistic bound.

    python bench/quality.py                    # trains and saves the families benchmark's model this reads
    python bench/family_ceiling.py             # -> bench/results/family_ceiling.{json,md}
    python bench/family_seeds.py               # other draws of the benchmark, each with its saved model
    python bench/family_ceiling.py --data var/bench/family_seeds/seed1 --out bench/results/family_ceiling_seed1.json

On the second benchmark's noisy users (taste fixed per LLM, heavy rating noise) the per-user win count, which
reads each user's whole past, stays level with or ahead of GMTRouter, which reads the last ``PREFSTREAM_HISTORY_TURNS``
turns and weighs old comparisons down. Nothing blind to ratings tells a noisy user from a drifting one (whose
taste changes and who needs the recency weighting), so the model cannot set those per user. This bounds what
setting them per family would give: the trained model (bench/quality.py's checkpoint, unchanged weights) is
scored on each family's test pairs with its history length, the posterior's recency scale and its prior
strength set to each of a few values, and with or without the conversation term (the previous turn's ratings,
the most recent evidence there is), next to the win count on the same pairs. Choosing the best setting on the
test pairs themselves makes the bound optimistic. Scoring only; a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import CATALOG, RESULTS, command_line, machine_facts  # noqa: E402
from trainer.baselines import PerUserMajority  # noqa: E402
from trainer.checkpoint import load_checkpoint  # noqa: E402
from trainer.data import load_dataset, online_samples  # noqa: E402
from trainer.evaluate import score_stream  # noqa: E402
from trainer.history import serving_history  # noqa: E402
from trainer.metrics import pair_metrics  # noqa: E402

#: (name, history turns (None: the serving default), recency on, prior strength factor, conversation term on)
SETTINGS = (
    ("as trained", None, True, 1.0, True),
    ("no recency", None, False, 1.0, True),
    ("prior x0.5", None, True, 0.5, True),
    ("prior x2", None, True, 2.0, True),
    ("no recency, prior x0.5", None, False, 0.5, True),
    ("no conversation term", None, True, 1.0, False),
    ("no recency, no conversation term", None, False, 1.0, False),
    ("250 turns", 250, True, 1.0, True),
    ("250 turns, no recency", 250, False, 1.0, True),
    ("250 turns, no recency, prior x0.5", 250, False, 0.5, True),
)


def with_setting(model, recency: bool, prior: float, conversation: bool = True):
    """The model with the posterior's recency scale made very long (no decay), its prior strength scaled and,
    without ``conversation``, the conversation term's weight made zero (the previous turn's ratings unread)."""
    pref = model.pref
    with torch.no_grad():
        if not recency:
            pref.log_tau.add_(10.0)  # a scale of e^10 x 100 turns: every visible comparison weighs alike
        pref.log_prec.add_(math.log(prior))
        if not conversation and model.conv_weight is not None:
            model.conv_weight.fill_(-50.0)  # 4 softplus(-50 + a user's gate) is 0 in float32 for any gate below 30
    return model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "bench" / "families",
                    help="the families benchmark as bench/quality.py writes it (with its saved model)")
    ap.add_argument("--families", default="noisy,drift", help="comma-separated families to score")
    ap.add_argument("--out", type=Path, default=RESULTS / "family_ceiling.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    facts = machine_facts()
    ckpt = next(iter(sorted(args.data.glob("gmtrouter-seed*-*.pt"))), None)
    if ckpt is None:
        ap.error(f"no saved model in {args.data}: run python bench/quality.py first")
    ds = load_dataset({s: args.data / f"{s}.jsonl" for s in ("train", "valid", "test")}, CATALOG, progress=False)
    family_of = json.loads((args.data / "users.json").read_text())
    count = PerUserMajority().fit(ds)
    trained = load_checkpoint(ckpt).model.eval()
    out: dict = {"command": command_line(), "machine": facts, "checkpoint": ckpt.name,
                 "history_turns": serving_history(), "families": {}}
    t0 = time.perf_counter()
    for fam in args.families.split(","):
        users = {u for u, f in family_of.items() if f == fam}
        full = online_samples(ds, "test", history=10**9, users=users, embed=False)
        row: dict = {"users": len(users)}
        for history in sorted({turns or serving_history() for _, turns, *_ in SETTINGS}):
            served = online_samples(ds, "test", turns=history, users=users)  # built once per history length
            for name, turns, recency, prior, conversation in SETTINGS:
                if (turns or serving_history()) != history:
                    continue
                with torch.no_grad():
                    model = with_setting(copy.deepcopy(trained), recency, prior, conversation)
                    groups, scores = score_stream(model, served)
                metrics = pair_metrics(groups, scores)
                row[name], row["pairs"] = metrics["accuracy"], metrics["pairs"]
                print(f"{fam:>10} {name:<34} {row[name]:.4f}", flush=True)
        row["per_user_majority"] = pair_metrics(groups, count.score(full))["accuracy"]
        out["families"][fam] = row
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["loadavg_end"] = list(os.getloadavg())
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(out))
    return 0


def markdown(out: dict) -> str:
    fams = list(out["families"])
    md = ["# Families: GMTRouter's history, recency and prior set per family (optimistic bound)", "",
          f"`{out['command']}`: the trained model `{out['checkpoint']}`, unchanged weights, scored on each family's "
          f"test pairs. Default history {out['history_turns']} turns. Load average at start "
          f"{out['machine']['loadavg_1_5_15'][0]:.2f}.", "",
          "| setting | " + " | ".join(fams) + " |", "|---|" + "---|" * len(fams)]
    for name, *_ in SETTINGS:
        md.append(f"| {name} | " + " | ".join(f"{out['families'][f][name]:.4f}" for f in fams) + " |")
    md.append("| per-user win count (whole past) | "
              + " | ".join(f"{out['families'][f]['per_user_majority']:.4f}" for f in fams) + " |")
    md.append("| test pairs | " + " | ".join(str(out["families"][f]["pairs"]) for f in fams) + " |")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    sys.exit(main())
