"""What one live-watch check reads, against what routers read to serve the same users once, as histories grow.

    python bench/watch_scale.py          # -> bench/results/watch_scale.{json,md}

At every recount the periodic trainer's live watch (trainer/watch.py) scores the comparisons each due user made
since their mark, each with the history a router serving it read (GraphStore.serving_samples: the last k turns
before it, the ratings given before it and the user's whole-past win counts then). For ``--users`` users with T
turns each (every answer rated, two LLMs a turn, in a FalkorDB server), each with ``--new`` comparisons since
their mark, this times:
- floor: what routers read to serve those users once (GraphStore.user_subgraphs of k turns and user_win_counts,
  the whole-past counts the count-based scorer attaches);
- per-user marks: serving_samples from each user's mark up to their newest turn (what the watch reads);
- one bound: serving_samples of every comparison since the oldest turn, filtered to the marks afterwards (what
  the watch read before per-user bounds; the trainer's window is a week, so an active user's whole week).
Each is the median of ``--reps`` runs; ratios are against the floor of the same size. Sample building and reads
only: scoring the due comparisons costs the same for every history length. A benchmark, not a test; run it alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, command_line, machine_facts, write_results  # noqa: E402
from bench.graph_store import Data, bulk_load  # noqa: E402
from bench.history import LongData  # noqa: E402
from prefstream.events import Feedback, Thumbs  # noqa: E402

K = 120  # the serving history (PREFSTREAM_HISTORY_TURNS)


class RatedHistory(LongData):
    """bench/history.py's long users (two LLMs answer every user-turn), with both answers rated 5 s later."""

    def feedback(self, u: int) -> list[Feedback]:
        return [Feedback.model_construct(event_id=f"f-{t.event_id}", user_id=t.user_id, turn_id=t.event_id,
                                         timestamp=t.timestamp + 5000, signal=Thumbs(up=(u + k // 2 + k % 2) % 3 > 0))
                for k, (t, _, _) in enumerate(self.turns(u))]


def timed(fn, reps: int) -> tuple[float, object]:
    """(median milliseconds of ``reps`` calls, the last call's result)."""
    times, out = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times), out


def measure(store, data: RatedHistory, users: list[str], new: int, reps: int) -> dict:
    """The three reads for ``users`` (each with ``new`` comparisons since their mark)."""
    t0 = {u: 1_600_000_000_000 + int(u[1:]) * 1000 for u in users}
    newest = {u: t0[u] + (data.n - 1) * 60_000 for u in users}
    marks = {u: newest[u] - new * 60_000 for u in users}
    floor, _ = timed(lambda: (store.user_subgraphs(users, K), store.user_win_counts(users)), reps)
    per_user, got = timed(lambda: store.serving_samples(users, K, marks, until_ms=newest), reps)

    def one_bound():
        every = store.serving_samples(users, K, min(t0.values()))
        return [s for s in every if marks[s.visible.user_id] <= s.targets[0].timestamp < newest[s.visible.user_id]]

    bound, same = timed(one_bound, reps)
    assert [(s.visible.user_id, s.targets[0].timestamp) for s in got] == [
        (s.visible.user_id, s.targets[0].timestamp) for s in same]
    return {"floor_ms": floor, "per_user_marks_ms": per_user, "one_bound_ms": bound, "samples": len(got),
            "per_user_marks_x_floor": per_user / floor, "one_bound_x_floor": bound / floor}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=64, help="due users per check (one router batch)")
    ap.add_argument("--turns", default="120,500,2000", help="comma-separated answers per user")
    ap.add_argument("--new", type=int, default=5, help="comparisons per user since their mark")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS / "watch_scale.json")
    args = ap.parse_args()
    out = {"command": command_line(), "machine": machine_facts(), "k": K, "users": args.users, "new": args.new,
           "reps": args.reps, "by_turns": {}}
    for turns, store, data, _ in loaded_graphs([int(t) for t in args.turns.split(",")], args.users):
        row = measure(store, data, [f"u{u}" for u in range(args.users)], args.new, args.reps)
        out["by_turns"][turns] = row
        print(f"{turns} turns: " + json.dumps({k: round(v, 2) for k, v in row.items()}), flush=True)
    return write_results(args.out, out, markdown)


def loaded_graphs(sizes: list[int], users: int, history: type[RatedHistory] | None = None
                  ) -> Iterator[tuple[int, object, RatedHistory, float]]:
    """(answers per user, a store holding ``users`` users with that many answers each, the users' data, seconds
    the store took to count their win counts) per size, one graph each on a FalkorDB server started for the bench
    (stopped when the iteration ends). The users are bulk-loaded, bypassing the writes that keep the win counts,
    so the store counts them after (GraphStore.recount_win_counts, what a graph from before the kept counts gets
    once). ``history``: a RatedHistory subclass to load instead (constructed the same way)."""
    from graphstore import open_store
    from prefstream.config import Settings
    from prefstream.procs import free_port, stop
    from stack import services

    base = Data(5000)
    tmp = Path(tempfile.mkdtemp(prefix="bench-graphs-"))
    port = free_port()
    proc = services.start_graph(port, tmp / "data", tmp / "logs")
    try:
        services.wait_graph(proc, port)
        for turns in sizes:
            store = open_store(Settings(graph_uri=f"redis://127.0.0.1:{port}", graph_name=f"answers{turns}"))
            data = (history or RatedHistory)(base, turns)
            bulk_load(store, data, range(users))
            t0 = time.perf_counter()
            store.recount_win_counts()
            yield turns, store, data, time.perf_counter() - t0
            store.close()
    finally:
        stop(proc)


def markdown(out: dict) -> str:
    md = ["# The live watch's read at growing histories", "",
          f"`{out['command']}`: {out['users']} due users, each with {out['new']} comparisons since their mark, "
          f"history k = {out['k']} turns, median of {out['reps']} runs; FalkorDB on the same 2 cores. Load average "
          f"{out['machine']['loadavg_1_5_15'][0]:.2f} at the start, {out['loadavg_end'][0]:.2f} at the end.", "",
          "| answers per user | floor: routers' read (k turns + whole-past counts) ms | watch, per-user marks ms | "
          "x floor | one bound since the oldest turn, filtered ms | x floor | samples |",
          "|---|---|---|---|---|---|---|"]
    for turns, r in out["by_turns"].items():
        md.append(f"| {turns} | {r['floor_ms']:.1f} | {r['per_user_marks_ms']:.1f} | {r['per_user_marks_x_floor']:.2f} "
                  f"| {r['one_bound_ms']:.1f} | {r['one_bound_x_floor']:.2f} | {r['samples']} |")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    sys.exit(main())
