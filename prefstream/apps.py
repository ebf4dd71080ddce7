"""The app processes `prefstream up` runs on top of the stack (ingest, routing, training)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefstream.config import Settings
    from prefstream.stack import AppSpec


def registered_apps(s: "Settings") -> list["AppSpec"]:
    return []
