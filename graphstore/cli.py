"""`prefstream audit USER`: what the system remembers about a user and why it routed them as it did."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from graphstore.base import GraphStore


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str | None, n: int = 60) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _rating(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}"


def _scores(scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in sorted(scores.items(), key=lambda kv: -kv[1]))


def print_history(items: list[dict], user_id: str, out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"history of {user_id} (newest first)", show_lines=False)
    for col in ("when (UTC)", "kind", "conversation:turn / request", "LLM", "query / scores", "rating",
                "feedback"):
        table.add_column(col, overflow="fold")
    for it in items:
        if it["kind"] == "turn":
            fb = "; ".join(f"{f['kind']}{' (rejected)' if f['rejected'] else ''} {f['rating']:.2f}"
                           for f in it["feedback"])
            table.add_row(_when(it["ts"]), "turn", f"{it['conversation_id']}:{it['turn_index']}", it["llm_id"],
                          _short(it["query"]), _rating(it["rating"]), fb)
        else:
            what = "fallback" if it["fallback"] else ("error" if it["error"] else "decision")
            table.add_row(_when(it["ts"]), what, it["request_id"], it["chosen_llm_id"] or "-",
                          _short(it["error"]) if it["error"] else _short(_scores(it["scores"])),
                          "", f"{it.get('scorer') or 'model ' + str(it['model_version'] or '-')}, "
                              f"{len(it['turn_ids'])} turns used")
    Console(file=out, width=160).print(table)


def print_record(counts: dict[str, tuple[float, float]], user_id: str, out: TextIO) -> None:
    """The user's pairwise record per LLM over every rated comparison (what the count-based scorer and the
    model's count evidence read), most games first."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"pairwise record of {user_id}", caption="every rated comparison; a tie is half a win")
    for col in ("LLM", "wins", "games", "win share"):
        table.add_column(col, justify="left" if col == "LLM" else "right")
    for llm, (wins, games) in sorted(counts.items(), key=lambda kv: (-kv[1][1], kv[0])):
        table.add_row(llm, f"{wins:g}", f"{games:g}", f"{wins / games:.2f}")
    Console(file=out, width=160).print(table)


def print_decision(d: dict, out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(file=out, width=160)
    by = d.get('scorer') or 'model ' + str(d['model_version'])
    con.print(f"decision {d['request_id']} for {d['user_id'] or '-'} at {_when(d['ts'])} UTC: "
              f"chose {d['chosen_llm_id'] or '-'} (answered by {by}, "
              f"{d['latency_ms']:.1f} ms{', fallback' if d['fallback'] else ''})")
    if d["error"]:
        con.print(f"error: {d['error']}")
    if d["scores"]:
        con.print(f"scores: {_scores(d['scores'])}")
    print_explanation(d.get("explain") or {}, d.get("chosen_llm_id"), con)
    table = Table(title="turns it used")
    for col in ("when (UTC)", "turn", "conversation:turn", "LLM", "query", "rating"):
        table.add_column(col, overflow="fold")
    for t in d["turns"]:
        if t.get("missing"):
            table.add_row("-", t["turn_id"], "-", "-", "(not in the graph)", "-")
        else:
            table.add_row(_when(t["ts"]), t["turn_id"], f"{t['conversation_id']}:{t['turn_index']}", t["llm_id"],
                          _short(t["query"]), _rating(t["rating"]))
    con.print(table)


def print_explanation(ex: dict, chosen: str | None, con) -> None:
    """What the user's own feedback did: each candidate's personal term, the turns that pushed the choice."""
    if ex.get("personal"):
        con.print("the user's own feedback added (personal term): " + _scores(ex["personal"]))
    if ex.get("pushed_by"):
        con.print(f"feedback that moved {chosen} most: " + ", ".join(
            f"{p['turn_id']} {p['push']:+.3f}" for p in ex["pushed_by"]))
    if ex.get("offsets"):
        con.print("level offsets of LLMs the model never learned (fitted by the trainer on all users' feedback): "
                  + ", ".join(f"{m} {b:+.3f}" for m, b in ex["offsets"].items()))
    if ex.get("games"):
        con.print("counted: " + ", ".join(f"{m} {ex['wins'].get(m, 0):g}/{g:g} wins" for m, g in ex["games"].items()))


def audit(store: "GraphStore", user_id: str, limit: int = 50, request_id: str | None = None,
          as_json: bool = False, out: TextIO | None = None) -> int:
    """Print a user's history (or one decision); 1 when there is nothing to show."""
    out = out or sys.stdout
    if request_id is not None:
        d = store.decision(request_id)
        if d is None or (d["user_id"] not in (None, user_id)):
            print(f"no decision {request_id!r} for user {user_id!r}", file=sys.stderr)
            return 1
        if as_json:
            print(json.dumps(d, indent=2, ensure_ascii=False), file=out)
        else:
            print_decision(d, out)
        return 0
    items = store.user_history(user_id, limit)
    if as_json:
        print(json.dumps(items, indent=2, ensure_ascii=False), file=out)
    elif not items:
        print(f"nothing recorded for user {user_id!r}", file=out)
    else:
        print_history(items, user_id, out)
        counts = store.user_win_counts([user_id])[0]
        if counts:
            print_record(counts, user_id, out)
    return 0 if items else 1


def open_from(args: argparse.Namespace) -> "GraphStore":
    """The graph store the command's stack options and settings name (a usage error when it cannot be reached)."""
    from graphstore import open_store
    from prefstream.errors import need_graph
    from prefstream.options import settings_from

    settings = settings_from(args)
    need_graph(settings)
    return open_store(settings, ensure_schema=False)


def handler(args: argparse.Namespace) -> int:
    with open_from(args) as store:
        return audit(store, args.user, args.limit, args.decision, args.json)


def register(subparsers: argparse._SubParsersAction) -> None:
    from prefstream.options import add_stack_options

    p = subparsers.add_parser(
        "audit", help="show what the graph remembers about a user, and the routing decisions made for them",
        description="A user's turns (query, LLM, rating, feedback) and routing decisions, newest first; "
                    "with --decision, one decision and the turns it used.")
    p.add_argument("user", metavar="USER", help="user id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=int, default=50, help="at most this many turns and decisions (default 50)")
    p.add_argument("--decision", metavar="REQUEST_ID", help="show one decision and the turns it used")
    add_stack_options(p)
    p.set_defaults(func=handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prefstream")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
