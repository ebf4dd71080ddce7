"""`prefstream up | down | status`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prefstream.config import Settings, get_settings


def add_stack_options(p: argparse.ArgumentParser) -> None:
    """Options that pick which local stack a command talks to (defaults from PREFSTREAM_*)."""
    p.add_argument("--run-dir", type=Path, help="where pids, ports and logs are kept (default var/run)")
    p.add_argument("--broker-port", type=int, help="Kafka-protocol broker port (default 9092)")
    p.add_argument("--graph-port", type=int, help="FalkorDB port (default 6379)")
    p.add_argument("--ray-port", type=int, help="Ray head port; the Ray client server takes the next (default 6390)")


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings with command-line overrides applied; a running stack's addresses win over defaults."""
    s = get_settings()
    update = {k: v for k, v in {"run_dir": getattr(args, "run_dir", None),
                                 "broker_port": getattr(args, "broker_port", None),
                                 "graph_port": getattr(args, "graph_port", None),
                                 "ray_port": getattr(args, "ray_port", None)}.items() if v is not None}
    if getattr(args, "no_ray", False):
        update["start_ray"] = False
    s = s.model_copy(update=update)
    state = s.run_dir / "stack.json"
    if state.exists():
        recorded = json.loads(state.read_text()).get("settings", {})
        s = s.model_copy(update={k: v for k, v in recorded.items() if k in Settings.model_fields})
    return s


def cmd_up(args: argparse.Namespace) -> int:
    from prefstream.stack import Stack

    stack = Stack(settings_from(args))
    timings = stack.up(apps=not args.no_apps)
    print(f"stack up in {timings['total']:.2f} s; state in {stack.state_file}; stop it with `prefstream down`")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from prefstream.stack import Stack

    stack = Stack(settings_from(args))
    if not stack.procs():
        print(f"no stack recorded in {stack.run_dir}")
        return 0
    stack.down()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from prefstream.procs import alive, same_process
    from prefstream.stack import Stack

    stack = Stack(settings_from(args))
    procs = stack.procs()
    if not procs:
        print(f"no stack recorded in {stack.run_dir}")
        return 1
    rows = [{"name": p.name, "pid": p.pid, "port": p.port, "running": alive(p.pid) and same_process(p),
             "log": p.log} for p in procs]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['name']:<8} pid {r['pid']:<8} port {str(r['port'] or '-'):<6} "
                  f"{'running' if r['running'] else 'STOPPED':<8} {r['log']}")
    return 0 if all(r["running"] for r in rows) else 1


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

    p = sub.add_parser("status", help="show the recorded processes and whether they run",
                       description="List the stack's processes; exit 1 if any is not running.")
    add_stack_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)
