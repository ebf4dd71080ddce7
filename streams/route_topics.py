"""Route topics by generation: with ``route_generation_s > 0`` a request goes to ``route.requests.g<S>`` and its
reply to ``route.decisions.g<S>``, S = N mod :func:`slots`, N = the request's timestamp // the generation length.

Why: a broker that enforces no retention keeps every request and reply for good. The local Tansu broker is one:
it ignores retention.ms, drops the connection on DeleteRecords, and only frees a topic's memory when the topic is
deleted (bench/results/broker_memory.md); its fetches also scan a whole partition. Topics of a bounded age keep
both its memory and its partitions bounded. A Kafka cluster honours retention.ms: there one topic each (0) is
the default.

Routers and reply readers follow the window of generations N-K .. N+1 around now, K = :func:`keep_behind` (a late
request or reply is still read; clocks may differ by less than a generation). :func:`maintain` creates the
generations up to N+AHEAD before they are used and deletes those older than the window, so a request is answered
as long as it is at most K generations old: at least ``route_keep_s`` after it was sent.

The broker's memory then holds K+1 generations of requests and replies at most (the local broker keeps about a
kilobyte per record, bench/results/broker_memory.md), so short generations with K spanning ``route_keep_s`` keep
less than a few long ones for the same time a late request survives.

Names are reused: generation N lives in slot S = N mod slots(s), with one slot more than the window, so a slot's
topic is deleted one generation before its name is created again. The local broker keeps a few kilobytes for every
topic name it ever held (bench/results/broker_memory.md), so a new name per generation would grow it without end.
Before a slot's topic is deleted the routers' committed offsets on it are set back to 0 (:func:`maintain`), so the
next generation in that slot is read from its start.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Callable, Hashable

from prefstream.config import Settings

from streams import dead_letter_topics
from streams.generations import GENERATION_SUFFIX, named
from streams.kafka_config import create_missing, delete_topic, rewind, security_kwargs, topic_configs

log = logging.getLogger(__name__)

AHEAD = 2  #: generations created ahead of the current one
MIN_KEEP_BEHIND = 2  #: generations kept behind the current one at least (older ones are deleted)


def enabled(s: Settings) -> bool:
    return s.route_generation_s > 0


def keep_behind(s: Settings) -> int:
    """Generations kept behind the current one: enough to span ``route_keep_s``, and at least MIN_KEEP_BEHIND."""
    return max(MIN_KEEP_BEHIND, math.ceil(s.route_keep_s / s.route_generation_s)) if enabled(s) else 0


def slots(s: Settings) -> int:
    """Topic names per route base: the window kept (keep_behind + 1 + AHEAD) and one spare, deleted meanwhile."""
    return keep_behind(s) + AHEAD + 2


def generation(s: Settings, ts_ms: int) -> int:
    return int(ts_ms) // (s.route_generation_s * 1000)


def topic_of(s: Settings, base: str, gen: int) -> str:
    """The topic of ``base`` that holds generation ``gen``: its slot's."""
    return named(base, gen % slots(s))


def current(s: Settings) -> int:
    return generation(s, int(time.time() * 1000))


def request_topic(s: Settings, ts_ms: int) -> str:
    """The topic a request with this timestamp is sent to."""
    return topic_of(s, s.topics.requests, generation(s, ts_ms)) if enabled(s) else s.topics.requests


def reply_topic(s: Settings, request_topic_name: str) -> str:
    """The topic the reply to a request read from ``request_topic_name`` goes to (the same generation's slot)."""
    m = GENERATION_SUFFIX.search(request_topic_name)
    if not enabled(s) or m is None:
        return s.topics.decisions
    return named(s.topics.decisions, int(m.group(1)))


def window(s: Settings, base: str, gen: int | None = None) -> list[str]:
    """The topics of ``base`` a reader follows now: one topic, or generations gen-keep_behind .. gen+1."""
    if not enabled(s):
        return [base]
    g = current(s) if gen is None else gen
    return [topic_of(s, base, x) for x in range(g - keep_behind(s), g + 2)]


def maintain(s: Settings, gen: int | None = None, delete: bool = True, consumer=None) -> dict[str, list[str]]:
    """Create the route topics of generations gen-keep_behind .. gen+AHEAD that are missing (partitions and retention
    as ``prefstream up`` makes them) and, with ``delete``, delete every other route generation topic (the spare
    slot, or a name from before slots). With ``consumer`` (a router's, of the routers' group) the group's committed
    offsets on a topic are set back to 0 before it is deleted, and a topic whose offsets could not be reset is left
    for the next call. Idempotent, so every router (and client) may call it; returns {"created": [...],
    "deleted": [...]}."""
    from kafka import KafkaAdminClient

    if not enabled(s):
        return {"created": [], "deleted": []}
    g, behind = current(s) if gen is None else gen, keep_behind(s)
    bases = (s.topics.requests, s.topics.decisions)
    configs = topic_configs(s)
    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap, client_id="prefstream-route-topics",
                             **security_kwargs(s))
    out: dict[str, list[str]] = {"created": [], "deleted": []}
    try:
        existing = set(admin.list_topics())
        wanted = {topic_of(s, base, x): configs[base] for base in bases for x in range(g - behind, g + AHEAD + 1)}
        out["created"] = create_missing(admin, wanted, s.kafka_partitions, existing)
        if delete:
            old = sorted(t for t in existing for base in bases
                         if t not in wanted and t.startswith(base + ".g") and GENERATION_SUFFIX.search(t))
            out["deleted"] = _delete(admin, old, consumer)
            dead_letter_topics.maintain(s, admin, existing)  # the dead-letter generations too (idempotent)
    finally:
        admin.close()
    if out["created"] or out["deleted"]:
        log.info("route topics: created %s, deleted %s", out["created"], out["deleted"])
    return out


def _delete(admin, names: list[str], consumer=None) -> list[str]:
    """Delete the topics ``names`` (each after resetting ``consumer``'s group offsets on it to 0, when given);
    returns those deleted (one another router deleted first is not)."""
    deleted = []
    for name in names:
        if consumer is not None:  # the name will hold a later generation: read it from its start then
            try:
                rewind(consumer, name)
            except Exception as exc:  # offsets not reset (or the broker away): not deleted, tried again next time
                log.warning("route topic %s not deleted, its offsets not reset: %s", name, exc)
                continue
        if delete_topic(admin, name, "route topic"):
            deleted.append(name)
    return deleted


class GenerationProducer:
    """A KafkaProducer for the route topics that is replaced when a new generation begins.

    kafka-python keeps every topic a producer has sent to in each of its metadata requests, for the producer's
    life, and a metadata request with auto-creation on (the local broker) re-creates a topic that
    :func:`maintain` deleted: a long-lived producer would bring back every generation it ever used, empty, at
    each refresh. A fresh producer per generation asks only for the topics of the window. The one it replaces
    is closed in the background; closing first sends what it still holds, so no send is lost and every send's
    future completes. With generations off it is one plain producer.

    ``generation``: what names the topics sent to now (the producer is renewed when it changes); by default the
    route-topic generation, or None (one producer for good) when route generations are off."""

    def __init__(self, s: Settings, generation: Callable[[], Hashable] | None = None, **kwargs):
        self.s, self._kwargs = s, kwargs
        self._lock = threading.Lock()
        self._generation = generation or ((lambda: current(s)) if enabled(s) else None)
        self._gen = self._generation() if self._generation else None
        self._producer = self._new()
        self._closing: list = []  # threads closing replaced producers

    def _new(self):
        from kafka import KafkaProducer

        return KafkaProducer(**self._kwargs)

    def send(self, topic: str, **kwargs):
        """KafkaProducer.send on the producer of the current generation."""
        with self._lock:
            if self._generation is not None and (gen := self._generation()) != self._gen:
                old, self._producer, self._gen = self._producer, self._new(), gen
                t = threading.Thread(target=old.close, kwargs={"timeout": 30}, name="producer-close", daemon=True)
                t.start()
                self._closing = [x for x in self._closing if x.is_alive()] + [t]
            producer = self._producer
        return producer.send(topic, **kwargs)

    def flush(self, timeout: float | None = None) -> None:
        with self._lock:
            producer, closing = self._producer, list(self._closing)
        producer.flush(timeout=timeout)
        for t in closing:  # a replaced producer has sent everything once its close returns
            t.join(timeout)

    def close(self, timeout: float | None = None) -> None:
        self.flush(timeout)
        self._producer.close(timeout=timeout)


def follow_replies(s: Settings, consumer, stop=None, at_end: bool = False) -> int | None:
    """Assign ``consumer`` every partition of the decision topics of the current window (creating missing
    generations first); with ``at_end`` they start at their end (only replies from now on), else a partition
    new to the assignment starts where the consumer's offset reset says and the others keep their positions.
    Returns the generation followed (None: generations are off)."""
    from kafka import TopicPartition

    from streams.kafka_config import topic_partitions

    gen = current(s) if enabled(s) else None
    if gen is not None:
        try:
            maintain(s, gen, delete=False)
        except Exception as exc:  # the broker away for a moment: the topics may exist already
            log.warning("route topics not maintained: %s", exc)
    tps = [TopicPartition(t, p) for t in window(s, s.topics.decisions, gen)
           for p in topic_partitions(consumer, t, stop, 0.1)]
    consumer.assign(tps)
    if at_end:
        consumer.seek_to_end(*tps)
        for tp in tps:
            consumer.position(tp)
    return gen
