"""A screen of the levels evidence term (GMTRouterConfig.levels): does reading each rating's level help GMTRouter?

    python bench/levels_term.py                          # -> bench/results/levels_term.{json,md}
    python bench/levels_term.py --variant levels_llm     # -> bench/results/levels_term_levels_llm.{json,md}

bench/family_select.py found that a learner knowing the second benchmark's generator is ahead of the per-user win
count on noisy users only when it reads every thumb and score at its level, with the recency drifting users need.
GMTRouter's posterior reads each rating against its sibling answers only (the sign guarantee). The levels term adds,
per candidate LLM, the user's ratings of it at their own level minus a learned constant, older ones down-weighted by
a learned recency (trainer/model.py LevelMemory; it keeps the guarantee: a rating moves only its own LLM's term).
This trains GMTRouter with and without it on the families benchmark (draw 0; both here, so the difference is paired
on the same test pairs, 95 % interval from resampling whole users) and with it on the default benchmark (against
bench/results/quality.json's model: the same data and training, as bench/file_order.py's stamped row reproduces).
``--variant levels_llm`` gives each LLM its own constant (GMTRouterConfig.level_center_llm: a thumbs-up read against
how that LLM is rated by everyone); the defaults' predictions from an earlier run are reused (same training).
`prefstream eval`'s defaults otherwise, no ablations, two torch threads. A benchmark, not a test; run it alone (about
7 minutes a model on 2 cores). One draw is a screen: bench/family_seeds.py pools six for a finding.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, command_line, machine_facts  # noqa: E402
from bench.family_seeds import family_of  # noqa: E402
from bench.quality import CATALOG  # noqa: E402
from trainer.config import GMTRouterConfig, TrainConfig  # noqa: E402
from trainer.evaluate import run_evaluation  # noqa: E402
from trainer.families import write_benchmark  # noqa: E402
from trainer.history import serving_history  # noqa: E402
from trainer.metrics import pair_correct, user_bootstrap  # noqa: E402


#: variant name -> GMTRouterConfig changes: the levels term with one constant for all LLMs, or with each LLM's own
VARIANTS = {"levels": {"levels": True}, "levels_llm": {"levels": True, "level_center_llm": True}}


def evaluate(kind: str, data: Path, variant: str, out_dir: Path) -> dict:
    """run_evaluation of GMTRouter (``variant``: "defaults" or one of :data:`VARIANTS`) on ``kind``; per-pair
    predictions go to ``out_dir``."""
    write_benchmark(kind, data, 0)
    files = {s: data / f"{s}.jsonl" for s in ("train", "valid", "test")}
    fams = json.loads((data / "users.json").read_text()) if (data / "users.json").exists() else None
    cfg = TrainConfig(model=dataclasses.replace(GMTRouterConfig(), **VARIANTS.get(variant, {})), seed=0)
    preds = out_dir / f"{kind}_{variant}.jsonl"
    report = run_evaluation(files["train"], files["valid"], files["test"], config=cfg, history=serving_history(),
                            ablations=False, families=fams, predictions=preds,
                            catalog=CATALOG if kind == "families" else data / "llm_catalog.json")
    return {"accuracy": report["gmtrouter"]["accuracy"], "auc": report["gmtrouter"]["auc"],
            "count": report["baselines"]["per_user_majority"]["accuracy"],
            "families": report.get("families"), "predictions": str(preds)}


def paired(a: str, b: str) -> dict:
    """Per family and overall: accuracy of b minus a on the same pairs (points, interval by users)."""
    rows = [[json.loads(line) for line in open(p)] for p in (a, b)]
    users = np.array([r["user"] for r in rows[0]])
    label = np.array([r["label"] == 1 for r in rows[0]])
    correct = [pair_correct(np.array([r["scores"]["gmtrouter"][0] - r["scores"]["gmtrouter"][1] for r in rs]), label)
               for rs in rows]
    fam = np.array([family_of(u) for u in users])
    out = {}
    for f in [*sorted(set(fam)), "all"]:
        m = fam == f if f != "all" else np.ones(len(fam), bool)
        out[f] = {"without": float(correct[0][m].mean()), "with": float(correct[1][m].mean()),
                  "diff": user_bootstrap(correct[1][m], correct[0][m], users[m])}
    return out


def report(res: dict) -> str:
    fam = res["families_paired"]
    title = {"levels": "", "levels_llm": " with each LLM's own constant"}[res.get("variant", "levels")]
    lines = [f"# The levels evidence term{title}: a screen", "", f"`{res['command']}`; load average "
             f"{res['machine']['loadavg_1_5_15'][0]:.2f} at the start, {res['load_end']:.2f} at the end.", "",
             "Families benchmark, draw 0 (the defaults' predictions from this bench's first run, reused: retraining "
             "them at two threads gives the same score on every pair, as bench/term_trace.py's draw 0 did):", "",
             "| family | without | with levels | difference (pts) [95 %] |", "|---|---|---|---|"]
    for f, r in fam.items():
        d = r["diff"]
        lines.append(f"| {f} | {r['without']:.4f} | {r['with']:.4f} | {100 * d['diff']:+.2f} "
                     f"[{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] |")
    lines += ["", f"Per-user win count on all of these pairs: {res['families_count']:.4f} (per family: "
              "bench/results/family_seeds.md, draw 0)."]
    d = res.get("default")
    if d:
        lines += ["", f"Default benchmark: with levels {d['accuracy']:.4f} (AUC {d['auc']:.4f}); without "
                  f"(quality.json) {res['default_without']:.4f}; per-user count {d['count']:.4f}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "bench", help="bench/quality.py's benchmark files")
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="levels",
                    help="levels: one constant for all LLMs; levels_llm: each LLM's own (GMTRouterConfig)")
    ap.add_argument("--no-default", action="store_true", help="skip the default benchmark")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/levels_term[_VARIANT].json")
    args = ap.parse_args()
    out = args.out or RESULTS / ("levels_term.json" if args.variant == "levels" else f"levels_term_{args.variant}.json")
    torch.set_num_threads(2)
    res = {"command": command_line(), "machine": machine_facts(), "variant": args.variant}
    work = ROOT / "var" / "bench" / "levels_term"
    work.mkdir(parents=True, exist_ok=True)
    without = work / "families_defaults.jsonl"  # the defaults' predictions: the same training, so reused when there
    if not without.exists():
        evaluate("families", args.data / "families", "defaults", work)
    fam = evaluate("families", args.data / "families", args.variant, work)
    res["families_paired"] = paired(str(without), fam["predictions"])
    res["families_count"] = fam["count"]
    if not args.no_default:
        res["default"] = evaluate("default", args.data / "default", args.variant, work)
        res["default_without"] = json.loads((RESULTS / "quality.json").read_text())["gmtrouter"]["accuracy"]
    res["load_end"] = os.getloadavg()[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=float) + "\n")
    out.with_suffix(".md").write_text(report(res))
    print(report(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
