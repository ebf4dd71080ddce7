"""The dead-letter topic by generation: with ``dead_letter_generation_s > 0`` a dead letter goes to
``prefstream.dead-letter.g<N>``, N = the send time // the generation length, and a generation is deleted once
``dead_letter_retention_ms`` has passed since it closed.

Why: the local broker ignores ``retention.ms`` and frees a record only when its topic is deleted (route_topics.py
says why), so one kept dead-letter topic would grow with every bad input for as long as the stack runs. Deleting
whole generations by age gives it the bound a Kafka cluster's ``retention.ms`` gives the plain topic: what a bad
input wrote is kept at least the retention time, and at most one generation longer. Off (0, the default): one
topic, bounded by its ``retention.ms`` on a Kafka cluster.

Readers follow :func:`pattern` (the plain topic and every generation); :func:`maintain` creates the current and
next generation (so producers find them with the configured partitions) and deletes the expired ones, and is
called by both the event-generation ingest and the routers (idempotent).
"""

from __future__ import annotations

import logging
import re
import time

from prefstream.config import Settings

from streams.kafka_config import create_missing, delete_topic, topic_configs
from streams.generations import GENERATION_SUFFIX, named

log = logging.getLogger(__name__)


def enabled(s: Settings) -> bool:
    return s.dead_letter_generation_s > 0


def current(s: Settings, now_s: float | None = None) -> int:
    return int(time.time() if now_s is None else now_s) // s.dead_letter_generation_s


def topic(s: Settings, now_s: float | None = None) -> str:
    """The topic a dead letter is sent to now: the current generation, or the plain topic (generations off)."""
    return named(s.topics.dead_letter, current(s, now_s)) if enabled(s) else s.topics.dead_letter


def pattern(s: Settings) -> str:
    """A regex matching the plain dead-letter topic and each of its generations (for a pattern subscription)."""
    return re.escape(s.topics.dead_letter) + r"(\.g\d+)?"


def topics(s: Settings, names) -> list[str]:
    """The topics among ``names`` that hold dead letters: the plain topic first, then the generations, oldest first."""
    base, gens = s.topics.dead_letter, []
    for n in names:
        m = GENERATION_SUFFIX.search(n)
        if m is not None and n[:m.start()] == base:
            gens.append((int(m.group(1)), n))
    return ([base] if base in names else []) + [n for _, n in sorted(gens)]


def expired(s: Settings, name: str, now_s: float | None = None) -> bool:
    """A generation whose end lies ``dead_letter_retention_ms`` or more in the past (never with retention -1)."""
    m = GENERATION_SUFFIX.search(name)
    if not enabled(s) or s.dead_letter_retention_ms < 0 or m is None or name[:m.start()] != s.topics.dead_letter:
        return False
    closed_at = (int(m.group(1)) + 1) * s.dead_letter_generation_s
    return (time.time() if now_s is None else now_s) >= closed_at + s.dead_letter_retention_ms / 1000


def maintain(s: Settings, admin, existing: set[str], now_s: float | None = None) -> dict[str, list[str]]:
    """Create the current and next dead-letter generations where missing and delete the expired ones; returns
    {"created": [...], "deleted": [...]}. Nothing to do with generations off."""
    out: dict[str, list[str]] = {"created": [], "deleted": []}
    if not enabled(s):
        return out
    g, config = current(s, now_s), topic_configs(s)[s.topics.dead_letter]
    wanted = {named(s.topics.dead_letter, x): config for x in (g, g + 1)}
    out["created"] = create_missing(admin, wanted, s.kafka_partitions, existing)
    for name in topics(s, existing):
        if expired(s, name, now_s):
            if delete_topic(admin, name, "dead-letter topic"):  # False: another maintainer was first
                out["deleted"].append(name)
    if out["created"] or out["deleted"]:
        log.info("dead-letter topics: created %s, deleted %s", out["created"], out["deleted"])
    return out
