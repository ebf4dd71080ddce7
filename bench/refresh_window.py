"""Where a trainer cycle's prequential cutoff falls when users have long histories, with cuts in the window or not.

    python bench/refresh_window.py          # -> bench/results/refresh_window.{json,md}

A trainer cycle (trainer/refresh.py) draws per user and pass one random cut, the next PREFSTREAM_TRAINER_MAX_TARGETS
comparisons after it as targets, and holds out the newest ``eval_fraction`` of those targets' times: it trains on
the targets before that cutoff and judges candidate, serving model and counting on every comparison of the sampled
users from the cutoff on. Drawn anywhere in a long-lived user's history, the cuts, and the cutoff with them, fall
weeks back: the cycle does not train on the recent weeks and judges all of them. RefreshConfig.window_cuts draws the
cuts in the cycle's window (PREFSTREAM_TRAINER_WINDOW_MINUTES, 7 days) instead. For ``--users`` users with T answers
each (every answer rated, two LLMs a turn, one turn every ``--spacing-minutes``, in a FalkorDB server:
bench/watch_scale.py's graphs), this runs a cycle's draw (RefreshTrainer.sample, which also reads the judged
comparisons) both ways and reports the cutoff's age, the targets trained on, the comparisons judged and the time the
draw took; and it times a cycle's check of the same users' kept win counts (RefreshTrainer.check_counts). A
benchmark, not a test; run it alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, command_line, machine_facts, write_results  # noqa: E402
from bench.watch_scale import K, RatedHistory, loaded_graphs  # noqa: E402

DAY_MS = 86_400_000


def spaced(minutes: float) -> type[RatedHistory]:
    """RatedHistory with a user's turns ``minutes`` apart (its own are one minute apart); ratings 5 s after."""
    class Spaced(RatedHistory):
        def turns(self, u: int):
            out = []
            for t, emb, extra in super().turns(u):
                t0 = 1_600_000_000_000 + u * 1000
                i, j = divmod(t.timestamp - t0, 60_000)
                out.append((t.model_copy(update={"timestamp": t0 + int(i * minutes * 60_000) + j}), emb, extra))
            return out

    return Spaced


def one_draw(store, users: int, window_cuts: bool) -> dict:
    """A cycle's draw over the graph's users, its cuts in the window or anywhere."""
    from trainer.refresh import RefreshConfig, RefreshTrainer

    cfg = RefreshConfig(users=users, k=K, window_cuts=window_cuts)
    with tempfile.TemporaryDirectory() as registry:
        trainer = RefreshTrainer(store, registry, cfg)
        newest = trainer.active_window()[1][0][1]
        t0 = time.perf_counter()
        _, _, window = trainer.sample(seed=0)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "cutoff_age_days": (newest - window["cutoff_ms"]) / DAY_MS,
            "window_days": cfg.window_minutes / 1440, **{k: window[k] for k in (
                "samples", "train_samples", "train_targets", "eval_targets")}}


def count_check(store, users: int) -> dict:
    """A cycle's check of the kept win counts (RefreshTrainer.check_counts) of the window's users, timed."""
    from trainer.refresh import RefreshConfig, RefreshTrainer

    with tempfile.TemporaryDirectory() as registry:
        trainer = RefreshTrainer(store, registry, RefreshConfig(users=users, check_users=users))
        ids = [u for u, _ in trainer.active_window()[1]]
        t0 = time.perf_counter()
        found = trainer.check_counts(ids, 0)
    return {"seconds": time.perf_counter() - t0, **found}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=64, help="users (all active in the window)")
    ap.add_argument("--turns", default="120,500,2000", help="comma-separated answers per user")
    ap.add_argument("--spacing-minutes", type=float, default=240.0, help="time between a user's turns")
    ap.add_argument("--out", type=Path, default=RESULTS / "refresh_window.json")
    args = ap.parse_args()
    out = {"command": command_line(), "machine": machine_facts(), "k": K, "users": args.users,
           "spacing_minutes": args.spacing_minutes, "by_turns": {}}
    graphs = loaded_graphs([int(t) for t in args.turns.split(",")], args.users, spaced(args.spacing_minutes))
    for turns, store, _, _ in graphs:
        one_draw(store, args.users, True)  # warm-up
        row = {"history_days": (turns // 2 - 1) * args.spacing_minutes / 1440,
               **{name: one_draw(store, args.users, name == "window") for name in ("anywhere", "window")}}
        row["count_check"] = count_check(store, args.users)
        print(turns, row, flush=True)
        out["by_turns"][turns] = row
    return write_results(args.out, out, markdown)


def markdown(out: dict) -> str:
    load = out["machine"]["loadavg_1_5_15"][0], out["loadavg_end"][0]
    intro = (f"`{out['command']}`: {out['users']} users, every answer rated, two LLMs a turn, a turn every "
             f"{out['spacing_minutes']:.0f} minutes. A cycle's draw (RefreshTrainer.sample: three passes of samples, "
             f"k = {out['k']}, then every comparison from the cutoff on read for the judge), its cuts anywhere in the "
             "users' histories (before) or in the cycle's window (RefreshConfig.window_cuts). Load average "
             f"{load[0]:.2f} at the start, {load[1]:.2f} at the end.")
    rows = [f"| {turns} | {row['history_days']:.0f} | {name} (window {row[name]['window_days']:.0f} days) | "
            f"{row[name]['cutoff_age_days']:.1f} | {row[name]['train_targets']} | {row[name]['eval_targets']} | "
            f"{row[name]['seconds']:.2f} |"
            for turns, row in out["by_turns"].items() for name in ("anywhere", "window")]
    checks = [f"| {turns} | {row['count_check']['users']} | {row['count_check']['answers']} | "
              f"{row['count_check']['rebuilt']} | {row['count_check']['seconds']:.2f} |"
              for turns, row in out["by_turns"].items()]
    return "\n".join(["# Where a trainer cycle's cutoff falls on long histories", "", intro, "",
                      "| answers per user | history days | cuts | cutoff: days before the newest turn | targets "
                      "trained on | comparisons judged | draw s |", "|---|---|---|---|---|---|---|", *rows, "",
                      "A cycle's check of the kept win counts of the same users (RefreshTrainer.check_counts):", "",
                      "| answers per user | users | rated answers | rebuilt | s |", "|---|---|---|---|---|",
                      *checks]) + "\n"


if __name__ == "__main__":
    sys.exit(main())
