"""`prefstream ingest | publish | route`."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path

from prefstream.stack_cli import add_stack_options, settings_from


def cmd_ingest(args: argparse.Namespace) -> int:
    from streams.faust_app import INGEST_GROUP, replay_group, run_worker

    group = replay_group() if args.from_beginning else INGEST_GROUP
    if args.from_beginning:
        print(f"re-reading every input topic from offset 0 as consumer group {group}")
    run_worker(settings_from(args), loglevel=args.loglevel, ready_name=args.ready_name, group=group)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    """Validate each JSONL line; good events go to their topic, bad ones to the dead-letter topic."""
    from tqdm import tqdm

    from streams.client import PrefstreamClient
    from streams.events import DeadLetter, InvalidEvent, parse_any

    s = settings_from(args)
    sent = bad = 0
    with (nullcontext(sys.stdin.buffer) if str(args.file) == "-" else open(args.file, "rb")) as src, \
            PrefstreamClient(s) as client:
        for lineno, line in enumerate(tqdm(src, desc="publishing", unit="ev", disable=not args.progress), 1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                client.publish(parse_any(line))
                sent += 1
            except (InvalidEvent, TypeError) as exc:
                bad += 1
                print(f"line {lineno}: {exc}", file=sys.stderr)
                client.publish_raw(s.topics.dead_letter, DeadLetter.of("publish", line, str(exc)).to_bytes())
        client.flush()
    print(f"published {sent} events; {bad} invalid lines sent to {s.topics.dead_letter}")
    return 0 if bad == 0 else 1


def cmd_route(args: argparse.Namespace) -> int:
    from streams.client import PrefstreamClient, RouteTimeout

    s = settings_from(args)
    with PrefstreamClient(s) as client:
        try:
            d = client.route(args.user, args.query, candidates=args.candidates or None,
                             conversation_id=args.conversation, budget=args.budget, timeout=args.timeout)
        except RouteTimeout as exc:
            print(exc, file=sys.stderr)
            return 2
    if args.json:
        print(d.model_dump_json(indent=2))
        return 0 if d.error is None else 1
    if d.error:
        print(f"error: {d.error}")
        return 1
    print(f"route {args.user!r} -> {d.chosen_llm_id}   (model {d.model_version or 'none'}"
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
                                   "(chat_turn, feedback, llm_registered, route_request). Invalid lines are "
                                   "reported and sent to the dead-letter topic.")
    add_stack_options(p)
    p.add_argument("file", type=Path, help="JSONL file, or - for stdin")
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
