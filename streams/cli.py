"""`prefstream ingest | publish | route`."""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

from prefstream.errors import USAGE, CliError, need_broker, need_graph
from prefstream.options import add_stack_options, settings_from


def cmd_ingest(args: argparse.Namespace) -> int:
    from streams.faust_app import INGEST_GROUP, replay_group, run_worker

    s = settings_from(args)
    need_broker(s)
    need_graph(s)
    group = replay_group() if args.from_beginning else INGEST_GROUP
    if args.from_beginning:
        print(f"re-reading every input topic from offset 0 as consumer group {group}")
    run_worker(s, loglevel=args.loglevel, ready_name=args.ready_name, group=group)
    return 0


def read_events(path: Path) -> tuple[list, list[tuple[int, bytes, str]]]:
    """Parse a whole JSONL file (or - for stdin) before anything connects: (events, [(line, raw, reason)])."""
    from prefstream.events import InvalidEvent, parse_any

    if str(path) != "-" and not path.exists():
        raise CliError(f"{path}: no such file", USAGE)
    good, bad = [], []
    with (nullcontext(sys.stdin.buffer) if str(path) == "-" else open(path, "rb")) as src:
        for lineno, line in enumerate(src, 1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                good.append(parse_any(line))
            except (InvalidEvent, TypeError, ValueError) as exc:
                bad.append((lineno, line, str(exc)))
    return good, bad


def cmd_publish(args: argparse.Namespace) -> int:
    """Check the whole file first; then publish it (with --skip-invalid, the good lines, and the bad ones
    to the dead-letter topic with their reason)."""
    from tqdm import tqdm

    from streams.client import PrefstreamClient
    from prefstream.events import DeadLetter

    events, bad = read_events(args.file)
    for lineno, _, reason in bad:
        print(f"{args.file}:{lineno}: {reason}", file=sys.stderr)
    if bad and not args.skip_invalid:
        raise CliError(f"{len(bad)} invalid line(s) in {args.file}; nothing published (fix them, or publish the "
                       f"rest with --skip-invalid)", USAGE)
    s = settings_from(args)
    need_broker(s)
    with PrefstreamClient(s) as client:
        for e in tqdm(events, desc="publishing", unit="ev", disable=not args.progress):
            client.publish(e)
        for _, line, reason in bad:
            client.publish_raw(s.topics.dead_letter, DeadLetter.of("publish", line, reason).to_bytes())
        client.flush()
    print(f"published {len(events)} events" + (f"; {len(bad)} invalid lines sent to {s.topics.dead_letter}"
                                               if bad else ""))
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from streams.client import PrefstreamClient, RouteTimeout
    from prefstream.events import RouteRequest

    try:  # the wire schema's own checks, before anything connects
        RouteRequest(request_id="cli", user_id=args.user, query=args.query, candidates=args.candidates or None,
                     conversation_id=args.conversation, budget=args.budget)
    except ValidationError as exc:
        raise CliError("invalid request: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                      for e in exc.errors()), USAGE) from None
    s = settings_from(args)
    need_broker(s)
    with PrefstreamClient(s) as client:
        try:
            d = client.route(args.user, args.query, candidates=args.candidates or None,
                             conversation_id=args.conversation, budget=args.budget, timeout=args.timeout)
        except RouteTimeout as exc:
            raise CliError(str(exc)) from None
    if args.json:
        print(d.model_dump_json(indent=2))
        return 0 if d.error is None else 1
    if d.error:
        print(f"error: {d.error}")
        return 1
    print(f"route {args.user!r} -> {d.chosen_llm_id}   ({d.scorer or 'model ' + str(d.model_version)}"
          f"{', FALLBACK' if d.fallback else ''}; {len(d.turn_ids)} history turns; {d.latency_ms:.1f} ms in router)")
    for llm, score in sorted(d.scores.items(), key=lambda kv: -kv[1]):
        print(f"  {score:+8.4f}  {llm}{'   <- chosen' if llm == d.chosen_llm_id else ''}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="run the Faust ingest worker (turns, feedback, catalog -> graph)",
                       description="Consume chat.turns, chat.feedback and llm.catalog; validate, embed and "
                                   "write to the graph store; bad events go to the dead-letter topic.")
    add_stack_options(p)
    p.add_argument("--loglevel", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument("--from-beginning", action="store_true",
                   help="re-read every input topic from offset 0 in a new consumer group (recovery after the "
                        "graph lost writes; idempotent, so nothing is duplicated)")
    p.add_argument("--ready-name", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("publish", help="publish JSONL events from a file or stdin",
                       description="Each line is one event whose `type` field names its schema "
                                   "(chat_turn, feedback, llm_registered, route_request). The whole file is "
                                   "checked first; invalid lines are reported as FILE:LINE: reason.")
    add_stack_options(p)
    p.add_argument("file", type=Path, help="JSONL file, or - for stdin")
    p.add_argument("--skip-invalid", action="store_true",
                   help="publish the valid lines and send the invalid ones to the dead-letter topic (default: "
                        "publish nothing when a line is invalid)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("route", help="ask the router which LLM should answer a query for a user",
                       description="Publish a RouteRequest and print the decision with every candidate's score.")
    add_stack_options(p)
    p.add_argument("user", help="user id")
    p.add_argument("query", help="the query text")
    p.add_argument("--candidates", nargs="+", help="candidate LLM ids (default: every registered LLM)")
    p.add_argument("--conversation", help="conversation id")
    p.add_argument("--budget", type=float, help="highest acceptable output price, USD per million tokens")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the decision")
    p.add_argument("--json", action="store_true", help="print the RouteDecision as JSON")
    p.set_defaults(func=cmd_route)
