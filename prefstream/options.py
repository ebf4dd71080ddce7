"""Command-line options every component CLI shares: which stack a command talks to."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from urllib.parse import urlsplit

from prefstream.config import Settings, get_settings


def add_stack_options(p: argparse.ArgumentParser) -> None:
    """Options that pick which local stack a command talks to (defaults from PREFSTREAM_*)."""
    p.add_argument("--run-dir", type=Path, help="where pids, ports and logs are kept (default var/run)")
    p.add_argument("--broker-port", type=int, help="Kafka-protocol broker port (default 9092)")
    p.add_argument("--graph-port", type=int, help="FalkorDB port (default 6379)")
    p.add_argument("--ray-port", type=int, help="Ray head port; the Ray client server takes the next (default 6390)")
    p.add_argument("--gateway-port", type=int, help="OpenAI-compatible gateway port (default 8400)")


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings with command-line overrides applied; a running stack's addresses win over defaults, and the ports
    given on the command line over both (``--graph-port`` also points a FalkorDB ``graph_uri`` at that port, and
    ``--broker-port`` a one-broker ``kafka_bootstrap``)."""
    s = get_settings()
    update = {k: v for k, v in {"run_dir": getattr(args, "run_dir", None),
                                 "broker_port": getattr(args, "broker_port", None),
                                 "graph_port": getattr(args, "graph_port", None),
                                 "ray_port": getattr(args, "ray_port", None),
                                 "gateway_port": getattr(args, "gateway_port", None)}.items() if v is not None}
    if getattr(args, "no_ray", False):
        update["start_ray"] = False
    s = with_running_stack(s.model_copy(update=update))
    flags = {k: v for k, v in update.items() if k.endswith("_port")}  # said on this command line: they win
    if flags.get("graph_port") is not None and s.graph_backend == "falkordb":
        flags["graph_uri"] = with_port(s.graph_uri, flags["graph_port"])
    if flags.get("broker_port") is not None and "," not in s.kafka_bootstrap:  # one broker: its port (a list: kept)
        flags["kafka_bootstrap"] = with_port(f"kafka://{s.kafka_bootstrap}", flags["broker_port"]).split("://", 1)[1]
    return s.model_copy(update=flags) if flags else s


def with_port(uri: str, port: int) -> str:
    """``uri`` (scheme://[user[:password]@]host[:port][/...]) with ``port`` in place of its own."""
    parts = urlsplit(uri)
    auth = parts.netloc.rpartition("@")[0]
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return parts._replace(netloc=f"{auth + '@' if auth else ''}{host}:{port}").geturl()


def _recorded(s: Settings) -> dict:
    """The settings a stack started from ``s.run_dir`` recorded (``prefstream up`` writes them to stack.json);
    empty when no stack was started there."""
    state = s.run_dir / "stack.json"
    return json.loads(state.read_text()).get("settings", {}) if state.exists() else {}


def with_running_stack(s: Settings) -> Settings:
    """``s`` with the addresses and route-topic generations that a stack started from ``s.run_dir`` recorded;
    ``s`` itself when no stack was started there."""
    recorded = _recorded(s)
    return s.model_copy(update={k: v for k, v in recorded.items() if k in Settings.model_fields}) if recorded else s


def with_stack_generations(s: Settings) -> Settings:
    """``s`` following the route-, event- and dead-letter-topic generations of the stack recorded in ``s.run_dir``
    when ``s`` talks to that stack's broker and does not set the length itself (the SDK's default settings: a client
    of ``prefstream up`` uses its rotating topics without being told)."""
    recorded = _recorded(s)
    if recorded.get("kafka_bootstrap") != s.kafka_bootstrap:
        return s
    update = {k: recorded[k] for k in ("route_generation_s", "event_generation_s", "dead_letter_generation_s")
              if k in recorded and k not in s.model_fields_set}
    return s.model_copy(update=update) if update else s
