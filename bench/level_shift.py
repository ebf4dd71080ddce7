"""A shipped model serving another population: would level offsets for every LLM help, or only for those it never
learned (what the periodic trainer fits)?

    python bench/level_shift.py --model CKPT --seed 1     # -> bench/results/level_shift.{json,md}

Live on a stream drawn with another seed (bench/results/online_new_llm_seed1_*.md) the shipped model, trained on the
default simulator's seed-0 users, trailed the per-user count until a cycle was promoted. If part of that is each
LLM's level under the new population, the offsets the trainer fits for LLMs it never learned could be fitted for
every LLM. Offline: simulate ``--seed`` (the default simulator), score ``--model`` on its test split with the served
history, and replay in time order the offsets the trainer's recounts would serve (bench/new_llm_offset.
recount_schedule: its schedule, fits on the earlier test comparisons only, chosen by trainer.calibration.calibrate)
for: the LLMs the model trained on fewer than 200 games of (as the trainer does), every LLM; against no offsets and
the per-user win count. Differences in points with a 95 % interval from resampling whole users. Run it alone.

Another seed draws other users and also other LLM styles (trainer/simulate.py: what users like or dislike in each
LLM, shared by all users), as if the same LLMs behaved otherwise. ``--style-seed 0`` keeps the styles of the model's
training data with the users of ``--seed``: other users of the same LLMs, what a shipped model meets.

    python bench/level_shift.py --model CKPT --seed 2 --style-seed 0 --out bench/results/level_shift_seed2_styles0.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, command_line, machine_facts, write_results  # noqa: E402
from bench.new_llm import load, pts, scored  # noqa: E402
from bench.new_llm_offset import in_force, recount_schedule  # noqa: E402


def simulated(seed: int, work: Path, style_seed: int | None = None) -> Path:
    """The default simulator's files for ``seed`` (written once into ``work``); with ``style_seed``, the LLMs' styles
    drawn as under that seed (SimConfig.style_seed: other users of the same LLMs)."""
    from trainer.families import write_benchmark

    same = style_seed is None or style_seed == seed
    out = work / (f"default-seed{seed}" if same else f"default-seed{seed}-styles{style_seed}")
    write_benchmark("default", out, seed, **({} if same else {"style_seed": style_seed}))
    return out


def served_offsets(groups: list, scores: list, llms: set, criterion: str) -> list[np.ndarray]:
    """``scores`` with the offsets for ``llms`` in force as each group is served (recount_schedule)."""
    from trainer.calibration import apply_offsets

    offsets = in_force(recount_schedule(groups, scores, llms, criterion), np.array([g.timestamp for g in groups]))
    return [apply_offsets(s, g.llm_ids, o) for g, s, o in zip(groups, scores, offsets)]


def scored_test(model: Path, seed: int, work: Path, style_seed: int | None = None, new_llm_games: int = 200):
    """(groups, the model's scores, the per-user count's scores, the LLMs the model trained on fewer than
    ``new_llm_games`` games of, every LLM with a test comparison) on the test split of simulated(seed, work,
    style_seed), scored with the served history, in time order."""
    import torch

    from trainer.baselines import PerUserMajority
    from trainer.checkpoint import load_checkpoint
    from trainer.data import online_samples
    from trainer.refresh import seen_games, unlearned

    ds = load(simulated(seed, work, style_seed))
    ck = load_checkpoint(model)
    torch.set_num_threads(2)
    groups, scores = scored(ck.model, ds)
    games = {m: 1.0 for g in groups for m in g.llm_ids}  # every LLM with a test comparison
    count = PerUserMajority().fit(ds).score(online_samples(ds, "test", history=10**9, embed=False))
    return groups, scores, count, set(unlearned(games, seen_games(ck), new_llm_games)), set(games)


def run(args) -> dict:
    from trainer.metrics import pairs, user_bootstrap
    from trainer.promotion import pair_correct

    facts = machine_facts()  # the load average before scoring
    groups, scores, count, fit, every = scored_test(args.model, args.seed, args.work, args.style_seed,
                                                    args.new_llm_games)
    sets = {"unlearned": fit, "all": every}
    acc = {"model": pair_correct(groups, scores), "count": pair_correct(groups, count)}
    for name, llms in sets.items():
        acc[f"offsets: {name}"] = pair_correct(groups, served_offsets(groups, scores, llms, args.criterion))
    users = np.array([g.user_id for g in groups for _ in pairs(g)])
    half = len(users) // 2  # groups are in time order: the second half of the pairs comes after the first
    vs = lambda a, b: {k: 100 * v for k, v in user_bootstrap(acc[a], acc[b], users).items()  # noqa: E731
                       if k in ("diff", "low", "high")}
    return {"command": command_line(), "machine": facts, "model": str(args.model), "seed": args.seed,
            "style_seed": args.seed if args.style_seed is None else args.style_seed,
            "criterion": args.criterion, "pairs": int(len(users)),
            "offset_llms": {k: sorted(v) for k, v in sets.items()},
            "accuracy": {k: float(v.mean()) for k, v in acc.items()},
            "accuracy_second_half": {k: float(v[half:].mean()) for k, v in acc.items()},
            "vs": {f"{k} - model": vs(k, "model") for k in acc if k.startswith("offsets")}
            | {f"{k} - count": vs(k, "count") for k in acc if k != "count"}}


def markdown(res: dict) -> str:
    md = ["# A shipped model on another population: level offsets for every LLM?", "",
          f"Command: `{res['command']}`. Test split of the default simulator drawn with seed {res['seed']} "
          f"(the LLMs' styles drawn with seed {res.get('style_seed', res['seed'])}) "
          f"({res['pairs']} pairs), scored with the served history; offsets by the trainer's recount schedule on "
          f"the earlier test comparisons, chosen by {res['criterion']}. Offsets for the LLMs the model never "
          f"learned: {', '.join(res['offset_llms']['unlearned']) or 'none'}. Load average "
          f"{res['machine']['loadavg_1_5_15'][0]:.2f} at the start, {res['loadavg_end'][0]:.2f} at the end.", "",
          "| method | accuracy | second half | - model | - per-user count |", "|---|---|---|---|---|"]
    for k, a in res["accuracy"].items():
        md.append(f"| {k} | {a:.4f} | {res['accuracy_second_half'][k]:.4f} | "
                  f"{pts(res['vs'][f'{k} - model']) if f'{k} - model' in res['vs'] else '-'} | "
                  f"{pts(res['vs'][f'{k} - count']) if f'{k} - count' in res['vs'] else '-'} |")
    return "\n".join(md) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="the shipped checkpoint")
    ap.add_argument("--seed", type=int, default=1, help="the population's simulator seed")
    ap.add_argument("--style-seed", type=int, help="draw the LLMs' styles as under this seed (the model's own "
                    "world: 0), the users from --seed (default: both from --seed)")
    ap.add_argument("--new-llm-games", type=int, default=200, help="PREFSTREAM_TRAINER_NEW_LLM_GAMES")
    ap.add_argument("--criterion", default="likelihood", choices=("accuracy", "likelihood"))
    ap.add_argument("--work", type=Path, default=ROOT / "var" / "bench")
    ap.add_argument("--out", type=Path, default=RESULTS / "level_shift.json")
    args = ap.parse_args()
    res = run(args)
    return write_results(args.out, res, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
