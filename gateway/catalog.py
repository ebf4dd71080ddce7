"""The LLMs the gateway can send to: the ``llm.catalog`` topic followed from its beginning, in a thread.

The latest LLMRegistered of each LLM wins (by timestamp), so `prefstream llms register` changes an upstream
for the running gateway within a poll. The gateway reads the topic rather than the graph because an upstream
(base URL, upstream model name, API-key variable) is gateway configuration, not graph data; the graph and the
router keep describing LLMs by their descriptions and prices.
"""

from __future__ import annotations

import logging
import threading
import time

from prefstream.config import Settings
from prefstream.events import InvalidEvent, LLMRegistered, parse_event

log = logging.getLogger(__name__)

QUIET_S = 1.0  # the initial replay is done once the topic has been quiet this long


class UpstreamCatalog:
    def __init__(self, s: Settings):
        self.s = s
        self._llms: dict[str, LLMRegistered] = {}
        self._lock = threading.Lock()
        self._loaded = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- reading ---------------------------------------------------------------------------------
    def get(self, llm_id: str) -> LLMRegistered | None:
        with self._lock:
            return self._llms.get(llm_id)

    def all(self) -> list[LLMRegistered]:
        with self._lock:
            return sorted(self._llms.values(), key=lambda e: e.llm_id)

    def routable(self) -> list[str]:
        """LLMs the gateway can forward to (registered with an upstream), in id order."""
        return [e.llm_id for e in self.all() if e.upstream is not None]

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    def add(self, event: LLMRegistered) -> None:
        """Take one registration (the latest by timestamp wins)."""
        with self._lock:
            old = self._llms.get(event.llm_id)
            if old is None or event.timestamp >= old.timestamp:
                self._llms[event.llm_id] = event

    # --- following the topic ---------------------------------------------------------------------
    def start(self, wait_s: float = 30.0) -> "UpstreamCatalog":
        """Follow the topic in a thread; wait until its past has been read (or ``wait_s``)."""
        self._thread = threading.Thread(target=self._follow, name="catalog", daemon=True)
        self._thread.start()
        self._loaded.wait(wait_s)
        return self

    def _follow(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        from streams.kafka_config import consumer_kwargs, topic_partitions

        consumer = KafkaConsumer(**consumer_kwargs(self.s, group_id=None))
        try:
            topic = self.s.topics.catalog
            tps = [TopicPartition(topic, p) for p in topic_partitions(consumer, topic, self._stop, 0.5)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            last = time.monotonic()
            while not self._stop.is_set():
                got = consumer.poll(timeout_ms=200)
                for records in got.values():
                    last = time.monotonic()
                    for r in records:
                        try:
                            self.add(parse_event(r.value, LLMRegistered))
                        except InvalidEvent as exc:  # the ingest dead-letters it; here it is just skipped
                            log.debug("catalog record skipped: %s", exc)
                if not self._loaded.is_set() and time.monotonic() - last > QUIET_S:
                    self._loaded.set()
        except Exception:
            log.exception("the catalog reader stopped")
        finally:
            consumer.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
