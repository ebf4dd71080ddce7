"""Command-line options every component CLI shares: which stack a command talks to."""

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
    p.add_argument("--gateway-port", type=int, help="OpenAI-compatible gateway port (default 8400)")


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings with command-line overrides applied; a running stack's addresses win over defaults."""
    s = get_settings()
    update = {k: v for k, v in {"run_dir": getattr(args, "run_dir", None),
                                 "broker_port": getattr(args, "broker_port", None),
                                 "graph_port": getattr(args, "graph_port", None),
                                 "ray_port": getattr(args, "ray_port", None),
                                 "gateway_port": getattr(args, "gateway_port", None)}.items() if v is not None}
    if getattr(args, "no_ray", False):
        update["start_ray"] = False
    s = s.model_copy(update=update)
    state = s.run_dir / "stack.json"
    if state.exists():
        recorded = json.loads(state.read_text()).get("settings", {})
        s = s.model_copy(update={k: v for k, v in recorded.items() if k in Settings.model_fields})
    return s
