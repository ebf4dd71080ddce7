"""A screen of the levels evidence term (GMTRouterConfig.levels): does reading each rating's level help GMTRouter?

    python bench/levels_term.py                          # -> bench/results/levels_term.{json,md}
    python bench/levels_term.py --variant levels_llm     # -> bench/results/levels_term_levels_llm.{json,md}
    python bench/levels_term.py --draws 0 1 2 3 4 5 --no-default   # -> bench/results/levels_term_draws.{json,md}
    python bench/levels_term.py --variant leniency       # -> bench/results/levels_term_leniency.{json,md}

bench/family_select.py found that a learner knowing the second benchmark's generator is ahead of the per-user win
count on noisy users only when it reads every thumb and score at its level, with the recency drifting users need.
GMTRouter's posterior reads each rating against its sibling answers only (the sign guarantee). The levels term adds,
per candidate LLM, the user's ratings of it at their own level minus a learned constant, older ones down-weighted by
a learned recency (trainer/model.py LevelMemory; it keeps the guarantee: a rating moves only its own LLM's term).
This trains GMTRouter with and without it on the families benchmark (draw 0; both here, so the difference is paired
on the same test pairs, 95 % interval from resampling whole users) and with it on the default benchmark (against
bench/results/quality.json's model: the same data and training, as bench/file_order.py's stamped row reproduces).
``--variant levels_llm`` gives each LLM its own constant (GMTRouterConfig.level_center_llm: a thumbs-up read against
how that LLM is rated by everyone). ``--variant leniency`` also reads each rating against the user's own level over
all LLMs (GMTRouterConfig.level_leniency: a lenient user's thumbs-ups say less), paired with the levels term alone.
The side without the term (:data:`WITHOUT`, the defaults until session 47; :data:`BASE` names each variant's) and
the variant's predictions from an earlier run are reused (same training).
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

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, catalog_for, command_line, machine_facts  # noqa: E402
from bench.family_seeds import pooled, read_predictions  # noqa: E402
from trainer.checkpoint import load_checkpoint  # noqa: E402
from trainer.config import GMTRouterConfig, TrainConfig  # noqa: E402
from trainer.evaluate import run_evaluation  # noqa: E402
from trainer.families import write_benchmark  # noqa: E402
from trainer.history import serving_history  # noqa: E402


#: variant name -> GMTRouterConfig changes: the levels term with one constant for all LLMs, with each LLM's own, or
#: with one constant and each rating also read against the user's own level (GMTRouterConfig.level_leniency)
VARIANTS = {"levels": {"levels": True, "level_leniency": False},
            "levels_llm": {"levels": True, "level_center_llm": True},
            "leniency": {"levels": True, "level_leniency": True}}
#: the side a variant is paired with: GMTRouter without the levels term (the defaults until session 47), or for
#: ``leniency`` the levels term without the user's level (the defaults since session 47)
WITHOUT = {"levels": False, "level_center_llm": False, "level_leniency": False}
BASE = {"levels": "without", "levels_llm": "without", "leniency": "levels"}


def predictions_file(out_dir: Path, kind: str, variant: str, seed: int = 0) -> Path:
    """Where :func:`evaluate` writes ``variant``'s per-pair predictions on ``kind`` drawn with ``seed``."""
    return out_dir / f"{kind}{f'_seed{seed}' if seed else ''}_{variant}.jsonl"


def evaluate(kind: str, data: Path, variant: str, out_dir: Path, seed: int = 0) -> dict:
    """run_evaluation of GMTRouter (``variant``: "without" (:data:`WITHOUT`) or one of :data:`VARIANTS`) on
    ``kind`` drawn with ``seed`` (also the training seed, as bench/family_seeds.py trains); per-pair predictions go
    to ``out_dir``."""
    write_benchmark(kind, data, seed)
    files = {s: data / f"{s}.jsonl" for s in ("train", "valid", "test")}
    fams = json.loads((data / "users.json").read_text()) if (data / "users.json").exists() else None
    change = {"without": WITHOUT, **VARIANTS}[variant]
    cfg = TrainConfig(model=dataclasses.replace(GMTRouterConfig(), **change), seed=seed)
    preds = predictions_file(out_dir, kind, variant, seed)
    model = preds.with_suffix(".pt")
    report = run_evaluation(files["train"], files["valid"], files["test"], config=cfg, history=serving_history(),
                            ablations=False, families=fams, predictions=preds,
                            catalog=catalog_for(kind, data), save_model=model)
    return {"accuracy": report["gmtrouter"]["accuracy"], "auc": report["gmtrouter"]["auc"],
            "count": report["baselines"]["per_user_majority"]["accuracy"],
            "families": report.get("families"), "predictions": str(preds), "learned": learned_levels(model)}


def learned_levels(path: Path) -> dict:
    """The trained levels term's shared values in the checkpoint at ``path``: its constant c, recency tau (in 100
    turns), prior, shared weight 4 softplus(.), and with the user's level its share lam and that level's prior."""
    lv = load_checkpoint(path).model.levels
    if lv is None:
        return {}
    out = {"c": torch.sigmoid(lv.center).item(), "tau": lv.log_tau.exp().item(), "prior": lv.log_prior.exp().item()}
    if lv.leniency_logit is not None:
        out |= {"share": torch.sigmoid(lv.leniency_logit).item(), "level_prior": lv.log_leniency_prior.exp().item()}
    return out


def paired(files: list[tuple[str, str, int]]) -> dict:
    """Per family and overall, over the pooled (without, with, draw) prediction files of the same pairs: each
    side's accuracy and the per-user win count's, and with minus without (points, interval by users)."""
    vs_without, vs_count = {}, {}
    for a, b, draw in files:
        pa, pb = read_predictions(Path(a), draw), read_predictions(Path(b), draw)
        assert all(pa[f][k] == pb.get(f, {}).get(k) for f in pa for k in ("users", "labels")), "not the same pairs"
        vs_without[draw] = {f: {"users": v["users"], "gmtrouter": pb[f]["gmtrouter"], "defaults": v["gmtrouter"]}
                            for f, v in pa.items()}
        vs_count[draw] = {f: {"users": v["users"], "gmtrouter": pb[f]["gmtrouter"],
                              "per_user_majority": v["per_user_majority"]} for f, v in pa.items()}
    d, c = pooled(vs_without, "defaults"), pooled(vs_count)
    return {f: {"without": d[f]["defaults"], "with": d[f]["gmtrouter"], "count": c[f]["per_user_majority"],
                "diff": d[f]["difference"], "with_vs_count": c[f]["difference"]} for f in d}


def described(learned: dict) -> str:
    """:func:`learned_levels`' values as "name value, ..."."""
    return ", ".join(f"{k} {v:.3g}" for k, v in learned.items())


def report(res: dict) -> str:
    fam = res["families_paired"]
    variant = res.get("variant", "levels")
    title = {"levels": "", "levels_llm": " with each LLM's own constant",
             "leniency": " read against the user's own level"}[variant]
    base, name = BASE[variant], "with the user's level" if variant == "leniency" else "with levels"
    draws = res.get("draws", [0])
    which = f"draws {', '.join(map(str, draws))} pooled" if len(draws) > 1 else f"draw {draws[0]}"
    lines = [f"# The levels evidence term{title}: a screen", "", f"`{res['command']}`; load average "
             f"{res['machine']['loadavg_1_5_15'][0]:.2f} at the start, {res['load_end']:.2f} at the end.", "",
             f"Families benchmark, {which}, paired on the same test pairs (the predictions without the term "
             "come from this bench's earlier runs where they exist, as retraining gives the same score on every "
             "pair). Differences in points, 95 % interval from resampling whole users:", "",
             f"| family | per-user count | {base} | {name} | with - {base} | with - count |",
             "|---|---|---|---|---|---|"]
    for f, r in fam.items():
        cells = [f"{100 * d['diff']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]"
                 for d in (r["diff"], r["with_vs_count"])]
        lines.append(f"| {f} | {r['count']:.4f} | {r['without']:.4f} | {r['with']:.4f} | {cells[0]} | {cells[1]} |")
    for draw, v in res.get("families_learned", {}).items():
        if v:
            lines += ["", f"Trained levels term, families draw {draw}: {described(v)}."]
    d = res.get("default")
    if d:
        lines += ["", f"Default benchmark: {name} {d['accuracy']:.4f} (AUC {d['auc']:.4f}); {base} "
                  f"(quality.json) {res['default_without']:.4f}; per-user count {d['count']:.4f}."]
        if d.get("learned"):
            lines[-1] += f" Trained levels term: {described(d['learned'])}."
        if "default_paired" in res:
            p = res["default_paired"]["diff"]
            lines[-1] += f" With - {base}, same pairs: {100 * p['diff']:+.2f} [{100 * p['low']:+.2f}, " \
                         f"{100 * p['high']:+.2f}] points."
    return "\n".join(lines) + "\n"


def families_pairs(args, work: Path, learned: dict) -> list[tuple[str, str, int]]:
    """(the predictions of the variant's base (:data:`BASE`), the variant's, draw) per draw: draw 0 in
    ``args.data``/families, the others in bench/family_seeds.py's folders. Either side's file is reused when an
    earlier run of this bench left it (retraining gives the same score on every pair); the variant's only when
    pooling draws. ``learned`` receives each draw's trained levels values (:func:`learned_levels`) where its
    model is there."""
    files = []
    for d in args.draws:
        folder = args.data / "families" if d == 0 else args.seeds / f"seed{d}"
        without = predictions_file(work, "families", BASE[args.variant], d)
        if not without.exists():
            evaluate("families", folder, BASE[args.variant], work, seed=d)
        with_ = predictions_file(work, "families", args.variant, d)
        if args.draws == [0] or not with_.exists():
            learned[d] = evaluate("families", folder, args.variant, work, seed=d)["learned"]
        elif with_.with_suffix(".pt").exists():  # a reused run's model
            learned[d] = learned_levels(with_.with_suffix(".pt"))
        files.append((str(without), str(with_), d))
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "bench", help="bench/quality.py's benchmark files")
    ap.add_argument("--seeds", type=Path, default=ROOT / "var" / "bench" / "family_seeds",
                    help="bench/family_seeds.py's draws (seed<N> folders), for draws other than 0")
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="levels",
                    help="levels: one constant for all LLMs; levels_llm: each LLM's own; leniency: one constant "
                    "and the user's own level (GMTRouterConfig)")
    ap.add_argument("--draws", type=int, nargs="+", default=[0], help="families draws, pooled")
    ap.add_argument("--no-default", action="store_true", help="skip the default benchmark")
    ap.add_argument("--out", type=Path, default=None,
                    help="default: bench/results/levels_term[_VARIANT][_draws].json")
    args = ap.parse_args()
    name = "levels_term" + ("" if args.variant == "levels" else f"_{args.variant}") + \
        ("" if args.draws == [0] else "_draws")
    out = args.out or RESULTS / f"{name}.json"
    torch.set_num_threads(2)
    res = {"command": command_line(), "machine": machine_facts(), "variant": args.variant, "draws": args.draws}
    work = ROOT / "var" / "bench" / "levels_term"
    work.mkdir(parents=True, exist_ok=True)
    res["families_learned"] = {}
    res["families_paired"] = paired(families_pairs(args, work, res["families_learned"]))
    if not args.no_default:
        res["default"] = evaluate("default", args.data / "default", args.variant, work)
        res["default_without"] = json.loads((RESULTS / "quality.json").read_text())["gmtrouter"]["accuracy"]
        base = predictions_file(work, "default", BASE[args.variant])
        if base.exists():  # paired on the same test pairs
            res["default_paired"] = paired([(str(base), res["default"]["predictions"], 0)])["all"]
    res["load_end"] = os.getloadavg()[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=float) + "\n")
    out.with_suffix(".md").write_text(report(res))
    print(report(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
