"""What a trainer cycle's samples cost as users' histories grow, with and without a bound on their targets.

    python bench/refresh_scale.py          # -> bench/results/refresh_scale.{json,md}

A trainer cycle (trainer/refresh.py) draws one sample per recently active user and pass: a random cut in the
user's whole history, the last k turns before it visible, and as targets the comparisons after it
(GraphStore.sample_training; at most ``max_targets`` of them when given, PREFSTREAM_TRAINER_MAX_TARGETS). It then
trains ``PREFSTREAM_TRAINER_STEPS`` steps on batches of 64 samples (trainer.refresh.refit). Without a bound, a
sample's targets, and so a step's work, grow with the history after the cut. For ``--users`` users with T answers
each (every answer rated, two LLMs a turn, in a FalkorDB server, bench/watch_scale.py's graphs), this draws one pass
of samples per bound in ``--bounds`` (0: none) and times the draw and ``--steps`` training steps from a fresh model on
them (FitResult.step_seconds, the mean step; after two warm-up steps). The floor is a step on samples bounded to 4
targets, the offline trainer's stride (TrainConfig.stride). A benchmark, not a test; run it alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, command_line, machine_facts, write_results  # noqa: E402
from bench.watch_scale import K, RatedHistory, loaded_graphs  # noqa: E402

FLOOR = 4  # targets per sample of the floor: the offline trainer's stride


def rated_every(every: int) -> type[RatedHistory]:
    """RatedHistory with only every ``every``-th comparison rated (both its answers), as in traffic where most
    turns get no feedback."""
    class SparselyRated(RatedHistory):
        def feedback(self, u: int):
            return [f for k, f in enumerate(super().feedback(u)) if (k // 2) % every == 0]

    return SparselyRated


def one_bound(store, users: int, bound: int, steps: int) -> dict:
    """Draw a pass of samples with at most ``bound`` targets (0: all) and train ``steps`` steps on them."""
    from trainer.refresh import refit

    t0 = time.perf_counter()
    samples = store.sample_training(users, K, seed=np.random.default_rng(0), max_targets=bound or None)
    draw_s = time.perf_counter() - t0
    fit = refit(samples, steps, seed=0, llms=store.llm_catalog())
    targets = [len(s.targets) for s in samples]
    return {"samples": len(samples), "targets_mean": float(np.mean(targets)), "targets_max": int(max(targets)),
            "draw_s": draw_s, "step_ms": 1000.0 * fit.step_seconds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=64, help="users (one sample each; a training batch is 64)")
    ap.add_argument("--turns", default="120,500,2000", help="comma-separated answers per user")
    ap.add_argument("--bounds", default="0,32", help="comma-separated targets per sample (0: no bound)")
    ap.add_argument("--steps", type=int, default=12, help="training steps timed per bound")
    ap.add_argument("--rated-every", type=int, default=1, help="rate only every N-th comparison (1: all)")
    ap.add_argument("--out", type=Path, default=RESULTS / "refresh_scale.json")
    args = ap.parse_args()
    out = {"command": command_line(), "machine": machine_facts(), "k": K, "users": args.users, "steps": args.steps,
           "floor_targets": FLOOR, "rated_every": args.rated_every, "by_turns": {}}
    bounds = [FLOOR] + [int(b) for b in args.bounds.split(",")]
    for turns, store, _, _ in loaded_graphs([int(t) for t in args.turns.split(",")], args.users,
                                            rated_every(args.rated_every)):
        one_bound(store, args.users, FLOOR, 2)  # warm-up: the first steps of a process are slower
        row = {str(b): one_bound(store, args.users, b, args.steps) for b in bounds}
        for r in row.values():
            r["step_x_floor"] = r["step_ms"] / row[str(FLOOR)]["step_ms"]
        out["by_turns"][turns] = row
        print(turns, row, flush=True)
    return write_results(args.out, out, markdown)


def markdown(out: dict) -> str:
    md = ["# A trainer cycle's samples as histories grow", "",
          f"`{out['command']}`: {out['users']} users, "
          + ("every answer rated" if out.get("rated_every", 1) == 1 else
             f"both answers of every {out['rated_every']}th comparison rated")
          + ", two LLMs a turn; one sample per user "
          f"(GraphStore.sample_training, k = {out['k']}), then {out['steps']} training steps of 64 samples from a "
          f"fresh model (trainer.refresh.refit; the mean step). Floor: a step on samples of at most "
          f"{out['floor_targets']} targets (the offline trainer's stride). Load average "
          f"{out['machine']['loadavg_1_5_15'][0]:.2f} at the start, {out['loadavg_end'][0]:.2f} at the end.", "",
          "| answers per user | targets per sample at most | targets mean (max) | draw s | step ms | x floor |",
          "|---|---|---|---|---|---|"]
    for turns, row in out["by_turns"].items():
        for b, r in row.items():
            md.append(f"| {turns} | {b if b != '0' else 'all'} | {r['targets_mean']:.0f} ({r['targets_max']}) | "
                      f"{r['draw_s']:.2f} | {r['step_ms']:.0f} | {r['step_x_floor']:.1f} |")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    sys.exit(main())
