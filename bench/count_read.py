"""What a router's whole-past win count read costs as histories grow, against its read of the last k turns.

    python bench/count_read.py          # -> bench/results/count_read.{json,md}

Every routing request of a user reads two things from the graph: the last k turns the model scores
(GraphStore.user_subgraphs) and the user's pairwise (wins, games) per LLM over their whole past
(GraphStore.user_win_counts), which the count-based scorer and the model's count evidence read. The first is
bounded by k; the second grew with the user's past while it was counted at read time. For ``--users`` users with T
answers each (every answer rated, two LLMs a turn, in a FalkorDB server), this times both, for one user (one
request) and for all of them at once (one router batch), median of ``--reps`` calls, and gives the count read as a
multiple of the k-turn read of the same users (the floor). Since the writes keep the counts, it also times what
keeping them costs: counting the loaded graph once (GraphStore.recount_win_counts, what an older graph gets at its
first start) and writing ``--write-users`` more users' turns and ratings through the ingest's writes; and what
`prefstream counts` costs an operator: checking every user's kept counts against their stored ratings
(graphstore.count_check) and rebuilding them all (GraphStore.rebuild_win_counts, what --repair does to a user that
differs). Run with ``--out`` at another commit to compare implementations on the same machine. A benchmark, not a
test; run it alone.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, command_line, machine_facts, write_results  # noqa: E402
from bench.watch_scale import K, loaded_graphs, timed  # noqa: E402


def writes(store, data, first: int, users: int, reps: int) -> dict:
    """Turn and feedback rows/s of more users written through the ingest's writes (upsert_turns, upsert_feedback,
    the store's batch size) into the graph as loaded: ``reps`` blocks of ``users`` new users each, the median."""
    turn_rate, feedback_rate = [], []
    for rep in range(reps):
        block = range(first + rep * users, first + (rep + 1) * users)
        turns = [it for u in block for it in data.turns(u)]
        fbs = [f for u in block for f in data.feedback(u)]
        t0 = time.perf_counter()
        store.upsert_turns(turns)
        t1 = time.perf_counter()
        store.upsert_feedback(fbs)
        t2 = time.perf_counter()
        turn_rate.append(len(turns) / (t1 - t0))
        feedback_rate.append(len(fbs) / (t2 - t1))
    return {"turn_rows_per_s": statistics.median(turn_rate), "feedback_rows_per_s": statistics.median(feedback_rate),
            "turn_rows_per_s_each": turn_rate, "feedback_rows_per_s_each": feedback_rate}


def maintenance(store) -> dict:
    """Seconds to check every user's kept counts (graphstore.count_check.check_win_counts) and to rebuild them all
    (GraphStore.rebuild_win_counts), and the check after the rebuild; both checks must find nothing."""
    from graphstore.count_check import check_win_counts

    users = [u for u, _ in store.active_users()]
    t0 = time.perf_counter()
    first = check_win_counts(store)
    t1 = time.perf_counter()
    store.rebuild_win_counts(users)
    t2 = time.perf_counter()
    again = check_win_counts(store)
    if not (first.ok and again.ok):
        raise RuntimeError(f"kept counts differ from the ratings: {first.off[:1] or again.off[:1]}")
    return {"users": first.users, "answers": first.answers, "check_s": t1 - t0, "rebuild_s": t2 - t1}


def measure(store, users: list[str], reps: int) -> dict:
    """Floor and count read, for one user (cycling through ``users``) and for all of them in one call."""
    turn = itertools.cycle(users)
    row = {}
    for name, who in (("one", lambda: [next(turn)]), ("batch", lambda: users)):
        floor, _ = timed(lambda: store.user_subgraphs(who(), K), reps)
        count, got = timed(lambda: store.user_win_counts(who()), reps)
        row[name] = {"floor_ms": floor, "count_ms": count, "count_x_floor": count / floor,
                     "llms": sum(len(c) for c in got)}
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=64, help="users in a router batch")
    ap.add_argument("--turns", default="120,500,2000", help="comma-separated answers per user")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--write-users", type=int, default=4, help="users per block written through the ingest's writes")
    ap.add_argument("--write-reps", type=int, default=5, help="blocks of --write-users written (median rows/s)")
    ap.add_argument("--label", default="", help="what the run measures (e.g. the commit), for the table")
    ap.add_argument("--out", type=Path, default=RESULTS / "count_read.json")
    args = ap.parse_args()
    out = {"command": command_line(), "machine": machine_facts(), "k": K, "users": args.users, "reps": args.reps,
           "write_users": args.write_users, "write_reps": args.write_reps,
           "label": args.label, "by_turns": {}}
    for turns, store, data, recount_s in loaded_graphs([int(t) for t in args.turns.split(",")], args.users):
        out["by_turns"][turns] = measure(store, [f"u{u}" for u in range(args.users)], args.reps)
        out["by_turns"][turns]["recount_s"] = recount_s
        out["by_turns"][turns]["writes"] = writes(store, data, args.users, args.write_users, args.write_reps)
        out["by_turns"][turns]["maintenance"] = maintenance(store)
        print(turns, out["by_turns"][turns], flush=True)
    return write_results(args.out, out, markdown)


def markdown(out: dict) -> str:
    md = ["# A router's whole-past win count read as histories grow", "",
          f"`{out['command']}`: every answer rated, two LLMs a "
          f"turn; floor: the same users' last k = {out['k']} turns (GraphStore.user_subgraphs); median of "
          f"{out['reps']} calls; FalkorDB on the same 2 cores. Load average {out['machine']['loadavg_1_5_15'][0]:.2f} "
          f"at the start, {out['loadavg_end'][0]:.2f} at the end.", "",
          f"| answers per user | one user: floor ms | count read ms | x floor | {out['users']} users: floor ms | "
          "count read ms | x floor |", "|---|---|---|---|---|---|---|"]
    for turns, r in out["by_turns"].items():
        cells = [f"{r[n]['floor_ms']:.2f} | {r[n]['count_ms']:.2f} | {r[n]['count_x_floor']:.3f}"
                 for n in ("one", "batch")]
        md.append(f"| {turns} | " + " | ".join(cells) + " |")
    kept = {t: r for t, r in out["by_turns"].items() if "writes" in r}
    if kept:
        md += ["", f"Keeping the counts: counting the {out['users']} bulk-loaded users once, and writing "
               f"{out['write_users']} more users through upsert_turns / upsert_feedback after the reads, "
               f"{out.get('write_reps', 1)} times (the median):", "",
               "| answers per user | count the loaded graph s | turn rows/s | feedback rows/s |", "|---|---|---|---|"]
        md += [f"| {t} | {r['recount_s']:.2f} | {r['writes']['turn_rows_per_s']:,.0f} | "
               f"{r['writes']['feedback_rows_per_s']:,.0f} |" for t, r in kept.items()]
    checked = {t: r["maintenance"] for t, r in out["by_turns"].items() if "maintenance" in r}
    if checked:
        md += ["", "`prefstream counts` on the same graph after the writes: checking every user's kept counts against "
               "a count of their stored ratings (graphstore.count_check), then rebuilding every user's counts "
               "(what --repair does to a user that differs); both checks found nothing to repair:", "",
               "| answers per user | users | rated answers | check s | rebuild all s |", "|---|---|---|---|---|"]
        md += [f"| {t} | {m['users']} | {m['answers']:,} | {m['check_s']:.2f} | {m['rebuild_s']:.2f} |"
               for t, m in checked.items()]
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    sys.exit(main())
