"""The app processes `prefstream up` runs on the stack, and how each tells it is ready.

An app writes ``<run_dir>/ready/<name>`` holding its pid once it serves; ``up`` waits for that file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefstream.config import Settings
    from prefstream.procs import Proc
    from prefstream.stack import AppSpec


def ready_file(s: "Settings", name: str) -> Path:
    return s.run_dir / "ready" / name


def mark_ready(s: "Settings", name: str) -> None:
    path = ready_file(s, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(os.getpid()))


def ready_callback(s: "Settings", name: str | None):
    """What an app calls once it serves: marks it ready for ``up`` (nothing when not run by ``up``)."""
    if not name:
        return None
    return lambda: mark_ready(s, name)


def _is_ready(name: str):
    def check(s: "Settings", proc: "Proc") -> bool:
        path = ready_file(s, name)
        return path.exists() and path.read_text().strip() == str(proc.pid)

    return check


def registered_apps(s: "Settings") -> list["AppSpec"]:
    from prefstream.stack import AppSpec

    return [
        AppSpec("ingest", ["ingest", "--ready-name", "ingest"], _is_ready("ingest")),
        AppSpec("router", ["router", "--workers", str(s.router_workers), "--ready-name", "router"],
                _is_ready("router"), timeout=300),
        AppSpec("trainer", ["train", "--ready-name", "trainer"], _is_ready("trainer")),
    ]
