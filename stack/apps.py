"""The app processes `prefstream up` runs on the local stack (each tells it is ready by its ready file)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from prefstream.config import Settings
from prefstream.procs import Proc
from prefstream.ready import is_ready


@dataclass(frozen=True)
class AppSpec:
    """An application process (`prefstream <subcommand>`) that ``up`` runs on the stack."""

    name: str
    args: list[str]
    healthy: Callable[[Settings, Proc], bool] | None = None
    timeout: float = 120.0


def app_specs(s: Settings) -> list[AppSpec]:
    """The app processes of a full stack."""
    return [
        AppSpec("ingest", ["ingest", "--ready-name", "ingest"], is_ready("ingest")),
        AppSpec("router", ["router", "--workers", str(s.router_workers), "--ready-name", "router"],
                is_ready("router"), timeout=300),
        AppSpec("trainer", ["train", "--ready-name", "trainer"], is_ready("trainer")),
        AppSpec("gateway", ["gateway", "--ready-name", "gateway"], is_ready("gateway")),
    ]
