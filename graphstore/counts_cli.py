"""`prefstream counts`: check the win counts the writes keep against the stored ratings; --repair rebuilds those
that differ (graphstore.count_check)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from graphstore.count_check import CountReport


def _pair(c: tuple[float, float]) -> str:
    return f"{c[0]:g}/{c[1]:g}"


def print_report(report: CountReport, repair: bool, out: TextIO) -> None:
    """The users whose kept counts differed, each differing LLM as wins/games kept and counted, and a summary."""
    from rich.console import Console
    from rich.table import Table

    con = Console(file=out, width=160)
    if report.off:
        table = Table(title="users whose kept win counts differ from their stored ratings")
        for col in ("user", "rated answers", "stale shares", "LLM: kept -> counted (wins/games)"):
            table.add_column(col, overflow="fold")
        for c in report.off:
            diff = "; ".join(f"{m}: {_pair(k)} -> {_pair(n)}" for m, (k, n) in c.differing().items())
            table.add_row(c.user_id, str(c.answers), str(c.stale_shares), diff or "(the same sums)")
        con.print(table)
    line = f"checked {report.users} users, {report.answers} rated answers: {len(report.off)} differed"
    if repair:
        line += f", {len(report.repaired)} rebuilt, {len(report.still_off)} still differ"
        if report.still_off:
            line += " (a write between the rebuild and the check does that for a moment: run it again)"
    elif report.off:
        line += "; `prefstream counts --repair` rebuilds them"
    con.print(line)


def run(store, users: list[str] | None, repair: bool, as_json: bool, out: TextIO | None = None) -> int:
    """Check (and repair) with a progress bar on standard error; 0 when nothing differs now, else 1."""
    from rich.console import Console
    from rich.progress import Progress

    from graphstore.count_check import check_win_counts

    out = out or sys.stdout
    users = list(users) if users is not None else [u for u, _ in store.active_users()]
    bar_on = Console(file=sys.stderr, quiet=not sys.stderr.isatty())  # no bar in a log or a pipe
    with Progress(transient=True, console=bar_on) as bar:
        task = bar.add_task("checking win counts", total=len(users))
        report = check_win_counts(store, users, repair, progress=lambda n: bar.advance(task, n))
    if as_json:
        print(json.dumps(report.to_dict(), indent=2), file=out)
    else:
        print_report(report, repair, out)
    return 0 if report.ok else 1


def handler(args: argparse.Namespace) -> int:
    from graphstore.cli import open_from

    with open_from(args) as store:
        return run(store, args.user or None, args.repair, args.json)


def register(subparsers: argparse._SubParsersAction) -> None:
    from prefstream.options import add_stack_options

    p = subparsers.add_parser(
        "counts", help="check the users' kept win counts against their stored ratings (--repair rebuilds them)",
        description="The writes keep each user's pairwise win counts per LLM, which routers read. This counts "
                    "every user's (or each --user's) rated comparisons again and shows the users whose kept "
                    "counts differ, e.g. after the graph server lost writes it had acknowledged. Exit code 1 "
                    "when any differ (after --repair: still differ).")
    p.add_argument("--user", action="append", metavar="USER", help="check this user only (repeatable)")
    p.add_argument("--repair", action="store_true",
                   help="rebuild the differing users' counts from their stored ratings, then check them again")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_stack_options(p)
    p.set_defaults(func=handler)
