"""Input-event topics by generation: with ``event_generation_s > 0`` a chat turn goes to ``chat.turns.g<N>`` and a
feedback event to ``chat.feedback.g<N>``, N = the send time // the generation length (the send time, not the
event's own timestamp, so a back-dated event never lands in a generation that is already gone).

Why: the local broker frees nothing while a topic exists (route_topics.py says why). The route topics rotate; what
still grew without bound in the 30-minute soak were the kept input topics (bench/results/reliability.md). Unlike a
route request, an input event must never be dropped unread, so only the ingest deletes here, and only a
generation that is closed and read to its end (:class:`Drain`):

- closed: the current generation is at least N + CLOSED_AFTER, so a producer would need a clock more than a whole
  generation behind ours to still send to N;
- read to its end: for QUIET_S seconds every poll of the ingest's consumer came back less than full and none
  brought a record of that topic, and everything read was written to the graph and committed. (The local
  broker's end offsets cannot tell: infra.md quirk 2.)

Before a topic is deleted its committed offsets are set back to 0, so a topic that a late producer re-creates is
read from its start. Once a generation is deleted the graph is the only full record of its events; the ingest
deletes QUIET_S after the generation's last graph write at the earliest, well after the local graph server's
append-only file reached the disk (it syncs every second). Off (0): one kept topic each, as on a Kafka cluster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prefstream.config import Settings

from streams.kafka_config import create_missing, topic_configs
from streams.generations import GENERATION_SUFFIX, named

AHEAD = 1  #: generations created ahead of the current one
CLOSED_AFTER = 2  #: generation N is closed once the current one is N + CLOSED_AFTER
QUIET_S = 10.0  #: seconds without a record of a closed generation (and without a full poll) before it is deleted


def enabled(s: Settings) -> bool:
    return s.event_generation_s > 0


def bases(s: Settings) -> tuple[str, str]:
    """The topics that have generations: chat turns and feedback (the catalog stays one kept topic)."""
    return s.topics.turns, s.topics.feedback


def current(s: Settings, now_s: float | None = None) -> int:
    return int(time.time() if now_s is None else now_s) // s.event_generation_s


def topic(s: Settings, base: str) -> str:
    """The topic an event for ``base`` is sent to now: its current generation, or ``base`` itself (generations
    off, or not an input-event topic)."""
    return named(base, current(s)) if enabled(s) and base in bases(s) else base


def parse(s: Settings, name: str) -> tuple[str, int] | None:
    """(base, generation) of an input-event generation topic, else None."""
    m = GENERATION_SUFFIX.search(name)
    if m is None or name[:m.start()] not in bases(s):
        return None
    return name[:m.start()], int(m.group(1))


def generations(s: Settings, names) -> list[str]:
    """The input-event generation topics among ``names``, oldest first."""
    found = [(p[1], n) for n in names if (p := parse(s, n)) is not None]
    return [n for _, n in sorted(found)]


def closed(s: Settings, name: str, now_s: float | None = None) -> bool:
    p = parse(s, name)
    return p is not None and current(s, now_s) >= p[1] + CLOSED_AFTER


def create_ahead(s: Settings, admin, existing: set[str]) -> list[str]:
    """Create the generations current .. current+AHEAD of every base that are missing (so producers find them
    with the configured partitions); returns those created."""
    g, configs = current(s), topic_configs(s)
    wanted = {named(base, x): configs[base] for base in bases(s) for x in range(g, g + AHEAD + 1)}
    return create_missing(admin, wanted, s.kafka_partitions, existing)


@dataclass
class Drain:
    """Which assigned generation topics have been read to their end (pure bookkeeping; times in seconds).

    A topic counts as drained once, for ``quiet_s`` and at least ``min_polls`` polls, no poll brought a record of
    it and no poll came back full (a full poll may have left records of any topic behind)."""

    quiet_s: float = QUIET_S
    min_polls: int = 3
    polls: int = 0
    last_record: dict[str, tuple[float, int]] = field(default_factory=dict)  # topic -> (time, poll) of its last record
    last_full: tuple[float, int] = (float("-inf"), -1)  # (time, poll) of the last full poll

    def assigned(self, topics: list[str], now: float) -> None:
        """The topics now assigned: new ones start their quiet period now; gone ones are forgotten."""
        self.last_record = {t: self.last_record.get(t, (now, self.polls)) for t in topics}

    def polled(self, counts: dict[str, int], full: bool, now: float) -> None:
        """One poll's records per topic (after they were written and committed) and whether it was full."""
        self.polls += 1
        for t, n in counts.items():
            if n and t in self.last_record:
                self.last_record[t] = (now, self.polls)
        if full:
            self.last_full = (now, self.polls)

    def drained(self, is_closed, now: float) -> list[str]:
        """The assigned topics that are closed (``is_closed(topic)``) and quiet."""
        return [t for t, seen in self.last_record.items()
                if is_closed(t) and now - max(seen[0], self.last_full[0]) >= self.quiet_s
                and self.polls - max(seen[1], self.last_full[1]) >= self.min_polls]
