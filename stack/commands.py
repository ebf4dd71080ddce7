"""`prefstream up | down | status | doctor`."""

from __future__ import annotations

import argparse

from prefstream.options import add_stack_options, settings_from


def cmd_up(args: argparse.Namespace) -> int:
    from stack.local import Stack

    stack = Stack(settings_from(args))
    timings = stack.up(apps=not args.no_apps)
    print(f"stack up in {timings['total']:.2f} s; state in {stack.state_file}; stop it with `prefstream down`")
    if not args.no_apps:
        print(f"OpenAI-compatible gateway: http://{stack.s.gateway_host}:{stack.s.gateway_port}/v1 "
              "(model prefstream/auto; register upstreams with `prefstream llms register FILE.yaml`)")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from stack.local import Stack

    stack = Stack(settings_from(args))
    if not stack.procs():
        print(f"no stack recorded in {stack.run_dir}")
        return 0
    stack.down()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Each component as it answers now (whether or not this shell started it), then the processes a local
    `prefstream up` recorded; exit 1 if anything is down."""
    from stack.health import Check, print_checks, status
    from prefstream.procs import alive, same_process
    from stack.local import Stack

    s = settings_from(args)
    checks = status(s)
    checks += [Check(f"process {p.name}", alive(p.pid) and same_process(p),
                     f"pid {p.pid}" + (f" port {p.port}" if p.port else "") + f", log {p.log}",
                     "" if alive(p.pid) and same_process(p) else "see its log; restart the stack: prefstream down && prefstream up")
               for p in Stack(s).procs()]
    return print_checks(checks, args.json)


def cmd_doctor(args: argparse.Namespace) -> int:
    from stack.health import doctor, print_checks

    return print_checks(doctor(settings_from(args), fix=args.fix), args.json)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start the local stack (broker, graph, Ray) and the app processes",
                       description="Start the local stack on real components, wait until each is healthy, "
                                   "and record pids and ports in the run directory.")
    add_stack_options(p)
    p.add_argument("--no-apps", action="store_true", help="start only broker, graph server and Ray")
    p.add_argument("--no-ray", action="store_true", help="do not start a Ray head")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="stop exactly the processes `up` started",
                       description="Stop the processes recorded in the run directory, apps first.")
    add_stack_options(p)
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="what each component says now: broker, lag, graph, serving model, trainer",
                       description="Ask every configured component how it is (broker and topics, ingest and router "
                                   "lag, dead letters in the last hour, graph, serving model, last trainer cycle, "
                                   "Ray), whether or not this shell started it, plus the processes a local `up` "
                                   "recorded. Exit 1 if anything is down.")
    add_stack_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("doctor", help="check the configuration against the real servers, with a fix for each failure",
                       description="Check the broker (reachable, API version, every topic and its partitions), the "
                                   "graph server (reachable, every index), the model registry and Ray; print the "
                                   "fix for each failure. Exit 1 if anything failed.")
    add_stack_options(p)
    p.add_argument("--fix", action="store_true", help="create missing topics, indexes and the registry directory")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_doctor)
