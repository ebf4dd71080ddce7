"""The LLM catalog survives the graph: the last good one on local disk, else rebuilt from the catalog topic.

A router reads the catalog from the graph store. When the graph is unreachable and the router has none
in memory (it just started), it loads the copy it last wrote to disk; with no copy, it replays the
``llm.catalog`` topic from the beginning (the same LLMRegistered events the ingest consumed) and embeds
the descriptions itself. Decisions then continue, flagged fallback, instead of failing for want of a catalog.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from graphstore.schema import LLMInfo
from prefstream.files import write_atomic

log = logging.getLogger(__name__)


class CatalogCache:
    def __init__(self, path: Path | str):
        self.path = Path(path)

    def save(self, catalog: dict[str, LLMInfo]) -> None:
        if not catalog:
            return
        write_atomic(self.path, json.dumps({m: {"description": c.description, "price_in": c.price_in,
                                                "price_out": c.price_out,
                                                "embedding": np.asarray(c.embedding, np.float32).tolist()}
                                            for m, c in catalog.items()}))

    def load(self) -> dict[str, LLMInfo]:
        try:
            blob = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return {m: LLMInfo(m, v["description"], float(v["price_in"]), float(v["price_out"]),
                           np.asarray(v["embedding"], np.float32)) for m, v in blob.items()}


def catalog_from_topic(s, encoder, timeout_s: float = 10.0) -> dict[str, LLMInfo]:
    """The catalog as the ``llm.catalog`` topic says it (latest registration of each LLM wins)."""
    from kafka import KafkaConsumer, TopicPartition

    from prefstream.events import InvalidEvent, LLMRegistered, parse_event
    from streams.kafka_config import consumer_kwargs

    consumer = KafkaConsumer(**{**consumer_kwargs(s, group_id=None), "enable_auto_commit": False})
    try:
        parts = consumer.partitions_for_topic(s.topics.catalog) or set()
        tps = [TopicPartition(s.topics.catalog, p) for p in parts]
        if not tps:
            return {}
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        latest: dict[str, LLMRegistered] = {}
        # end offsets cannot be trusted on the local broker (../shared/design/infra.md): read until quiet
        start = last = time.monotonic()
        while time.monotonic() - start < timeout_s and time.monotonic() - last < 2.0:
            for records in consumer.poll(timeout_ms=200).values():
                last = time.monotonic()
                for r in records:
                    try:
                        e = parse_event(r.value, LLMRegistered)
                    except InvalidEvent:
                        continue
                    if e.llm_id not in latest or e.timestamp >= latest[e.llm_id].timestamp:
                        latest[e.llm_id] = e
    finally:
        consumer.close()
    if not latest:
        return {}
    events = list(latest.values())
    emb = encoder.encode([e.description for e in events])
    return {e.llm_id: LLMInfo(e.llm_id, e.description, e.price_in, e.price_out, np.asarray(v, np.float32))
            for e, v in zip(events, emb)}
