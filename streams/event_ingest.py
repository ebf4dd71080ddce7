"""The ingest of input-event generations (event_topics): every partition of every turns / feedback generation that
exists, read with kafka-python and a static assignment, written by the same Ingestor as the Faust agents.

Why not Faust: its consumer cannot subscribe by pattern (faust/transport/drivers/aiokafka.py: "pattern does not
work"), and a new topic every generation would mean a group rebalance every generation, each a stall of seconds on
the local broker. A static assignment of what exists, refreshed every REFRESH_S, needs neither. Offsets are still
committed to a consumer group of their own (``<ingest group>.generations``) after each batch is written and its
dead letters are sent, so delivery is at-least-once, as for the agents; the graph writes are idempotent.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from prefstream.config import Settings
from prefstream.metrics import metrics, reason_class
from streams import dead_letter_topics, event_topics
from streams.ingest import BatchResult, Ingestor, RawMessage
from streams.kafka_config import (consumer_kwargs, delete_topic, producer_kwargs, rewind, security_kwargs,
                                  topic_partitions)
from streams.route_loop import next_offsets

log = logging.getLogger(__name__)

REFRESH_S = 5.0  #: how often the topics that exist are listed (new generations assigned, drained ones deleted)
POLL_MS = 500
METADATA_WAIT_S = 5.0  #: longest wait for the partitions of a listed generation (then: tried at the next refresh)


def generations_group(group: str) -> str:
    """The consumer group of the generation reader beside the Faust agents' group ``group``."""
    return f"{group}.generations"


class EventGenerationIngest:
    """Reads the input-event generations into the graph until ``stop`` is set; with ``delete``, deletes each
    generation once it is closed and drained (only the ingest's own group does: a replay group must not)."""

    def __init__(self, s: Settings, ingestor: Callable[[], Ingestor], group: str, delete: bool = True,
                 stop: threading.Event | None = None):
        self.s, self.ingestor, self.group, self.delete = s, ingestor, group, delete
        self.stop = stop or threading.Event()
        self.drain = event_topics.Drain()

    def run_forever(self) -> None:
        """:meth:`run` until ``stop``, started again after an unexpected error (the broker or the graph away)."""
        while not self.stop.is_set():
            try:
                self.run()
            except Exception:
                if self.stop.is_set():
                    break
                log.exception("event generation ingest failed; starting it again in 2 s")
                self.stop.wait(2.0)

    def run(self) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

        s = self.s
        consumer = KafkaConsumer(**consumer_kwargs(s, group_id=self.group, max_poll_records=s.ingest_batch_size,
                                                   allow_auto_create_topics=False))
        producer = KafkaProducer(**producer_kwargs(s))
        admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap, client_id="prefstream-event-generations",
                                 **security_kwargs(s))
        next_refresh = 0.0
        try:
            while not self.stop.is_set():
                if time.monotonic() >= next_refresh:
                    self._refresh(consumer, admin)
                    next_refresh = time.monotonic() + REFRESH_S
                if not consumer.assignment():
                    self.stop.wait(POLL_MS / 1000)
                    continue
                by_topic: dict[str, list] = {}
                for tp, recs in consumer.poll(timeout_ms=POLL_MS).items():
                    by_topic.setdefault(tp.topic, []).extend(recs)
                for topic in sorted(by_topic):
                    self._ingest(topic, by_topic[topic], producer)
                records = [r for recs in by_topic.values() for r in recs]
                if records:
                    consumer.commit(next_offsets(records))
                self.drain.polled({t: len(v) for t, v in by_topic.items()}, len(records) >= s.ingest_batch_size,
                                  time.monotonic())
        finally:
            for client in (consumer, producer, admin):
                try:
                    client.close()
                except Exception:  # closing on the way out: nothing left to do about it
                    pass

    def _refresh(self, consumer, admin) -> None:
        """Create the generations ahead; assign every partition of those that exist, less the drained ones, which
        are then deleted (unassigned first, so no metadata request of this consumer asks for them again)."""
        from kafka import TopicPartition

        s = self.s
        try:
            existing = set(admin.list_topics())
            event_topics.create_ahead(s, admin, existing)
            if self.delete:  # the ingest's own group also keeps the dead-letter generations (created, expired deleted)
                dead_letter_topics.maintain(s, admin, existing)
        except Exception as exc:  # the broker away for a moment: keep reading what is assigned
            log.warning("event generations not refreshed: %s", exc)
            return
        drained = self.drain.drained(lambda t: event_topics.closed(s, t), time.monotonic()) if self.delete else []
        try:
            drained = [t for t in drained if self._at_end(consumer, t)]
            for topic in drained:  # a topic re-created by a late producer is then read from its start
                rewind(consumer, topic)
        except Exception as exc:  # nothing deleted this time
            log.warning("drained event generations not checked or their offsets not reset: %s", exc)
            drained = []
        # a topic whose partitions this consumer does not know yet (or any more: deleted meanwhile) is left for the
        # next refresh, and so never counts as drained unread
        parts = {t: topic_partitions(consumer, t, self.stop, 0.1, timeout_s=METADATA_WAIT_S)
                 for t in event_topics.generations(s, existing) if t not in drained}
        topics = [t for t, ps in parts.items() if ps]
        tps = [TopicPartition(t, p) for t in topics for p in parts[t]]
        if set(tps) != consumer.assignment():
            consumer.assign(tps)
        self.drain.assigned(topics, time.monotonic())
        for topic in drained:
            self._delete(admin, topic)

    @staticmethod
    def _at_end(consumer, topic: str) -> bool:
        """Whether this consumer's position is at least the broker's end offset on every assigned partition of
        ``topic``. The local broker's end offsets can lag behind (infra.md quirk 2), so this alone proves nothing;
        it is a second check beside the drain rule: a reader whose fetches stopped bringing records while some lie
        beyond its position is caught here whenever the broker reports any of them."""
        tps = [tp for tp in consumer.assignment() if tp.topic == topic]
        ends = consumer.end_offsets(tps)
        return bool(tps) and all(consumer.position(tp) >= ends.get(tp, 0) for tp in tps)

    def _delete(self, admin, topic: str) -> None:
        # not deleted (None): still assigned to nobody, the next refresh assigns it again, drains, retries
        if delete_topic(admin, topic, "event generation") is not None:
            log.info("event generation %s read to its end and deleted", topic)

    def _ingest(self, topic: str, records, producer) -> None:
        """Write one topic's records (retrying while the graph is away: their offsets are committed only after
        this returns), then send their dead letters."""
        base, _ = event_topics.parse(self.s, topic) or (topic, 0)
        handle, kind = (Ingestor.turns, "chat_turn") if base == self.s.topics.turns else (Ingestor.feedback, "feedback")
        msgs = [RawMessage(r.value or b"", topic, r.partition, r.offset) for r in records]
        delay = 0.2
        while True:
            try:
                result: BatchResult = handle(self.ingestor(), msgs)
                break
            except Exception as exc:
                if self.stop.is_set():  # uncommitted: read again after the restart
                    raise
                log.warning("ingest of %d messages from %s failed (%s: %s); retrying in %.1f s", len(msgs), topic,
                            type(exc).__name__, exc, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, 5.0)
        metrics().ingested.labels(kind).inc(result.accepted)
        for dl in result.dead:
            metrics().dead_letters.labels(reason_class(dl.reason)).inc()
            producer.send(dead_letter_topics.topic(self.s), key=dl.topic.encode(), value=dl.to_bytes())
            log.warning("dead letter from %s: %s", dl.topic, dl.reason)
        if result.dead:
            producer.flush(timeout=60)
