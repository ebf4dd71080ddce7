"""One error path for the command line: a component that is not there, or bad input, is one line that says
what was tried and how to fix it, within seconds, with exit code 2 (usage / configuration) or 1 (runtime).
``prefstream --debug`` shows the traceback instead."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlparse

USAGE, RUNTIME = 2, 1
UP = 'start the local stack with "prefstream up"'


class CliError(Exception):
    """A failure the user can fix; ``str`` is the one line printed."""

    def __init__(self, message: str, code: int = RUNTIME):
        super().__init__(message)
        self.code = code


def reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    if "://" in address:
        u = urlparse(address)
        return u.hostname or "127.0.0.1", u.port or default_port
    host, _, port = address.rpartition(":")
    return (host or "127.0.0.1"), int(port) if port.isdigit() else default_port


def broker_line(s) -> str:
    return f"no Kafka broker at {s.kafka_bootstrap} (PREFSTREAM_KAFKA_BOOTSTRAP); {UP}"


def graph_line(s) -> str:
    return f"no graph server at {s.graph_uri} (PREFSTREAM_GRAPH_URI, backend {s.graph_backend}); {UP}"


def need_broker(s) -> None:
    """Fail fast (one TCP connect per bootstrap server) instead of the Kafka client's 30 s bootstrap wait."""
    servers = [_host_port(a.strip(), 9092) for a in s.kafka_bootstrap.split(",") if a.strip()]
    if not any(reachable(h, p) for h, p in servers):
        raise CliError(broker_line(s))


def need_graph(s) -> None:
    host, port = _host_port(s.graph_uri, 7687 if s.graph_backend == "neo4j" else 6379)
    if not reachable(host, port):
        raise CliError(graph_line(s))


def need_ray(s, wait_s: float = 3.0) -> None:
    """The Ray head's GCS port answers within ``wait_s`` (a Ray that is still starting gets that long), or one
    line: ``ray.init`` on an unreachable address would retry for minutes. "local" starts its own Ray."""
    if s.ray_address in ("local", "auto", ""):
        return
    host, port = _host_port(s.ray_address.removeprefix("ray://"), 6379)
    end = time.monotonic() + wait_s
    while not reachable(host, port, timeout=1.0):
        if time.monotonic() >= end:
            raise CliError(f"no Ray cluster at {s.ray_address} (PREFSTREAM_RAY_ADDRESS); {UP}, or run the router "
                           "without Ray: prefstream router --workers 0")
        time.sleep(0.2)


def one_line(exc: BaseException, s=None) -> str | None:
    """The one line for a known connection failure raised deep inside a client library (None: unknown)."""
    name = type(exc).__name__
    text = str(exc)
    if name in ("NoBrokersAvailable", "KafkaTimeoutError", "KafkaConnectionError") or "bootstrap" in text.lower():
        return broker_line(s) if s is not None else f"the Kafka broker is not reachable ({text}); {UP}"
    if name in ("ConnectionError", "ServiceUnavailable", "TimeoutError") and s is not None and (
            "6379" in text or "graph" in text.lower() or "connecting" in text.lower() or "neo4j" in text.lower()):
        return graph_line(s)
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused ({text}); {UP}"
    return None
