"""The ready-file handshake: how an app process tells `prefstream up` it serves.

An app writes ``<run_dir>/ready/<name>`` holding its pid once it serves; ``up`` waits for that file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefstream.config import Settings
    from prefstream.procs import Proc


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


def is_ready(name: str):
    """A check for ``up``: the app named ``name`` wrote its ready file with this process's pid."""
    def check(s: "Settings", proc: "Proc") -> bool:
        path = ready_file(s, name)
        return path.exists() and path.read_text().strip() == str(proc.pid)

    return check
