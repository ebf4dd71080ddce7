"""Every event type makes a round trip through the real broker with kafka-python."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer

from prefstream.events import (
    ChatTurn, DeadLetter, Feedback, LLMRegistered, RouteDecision, RouteRequest, Score, parse_any,
)
from streams.kafka_config import consumer_kwargs, create_topics, producer_kwargs

pytestmark = pytest.mark.integration

EVENTS = [
    LLMRegistered(llm_id="m1", description="small and cheap", price_in=0.1, price_out=0.2),
    ChatTurn(event_id="t1", user_id="u1", conversation_id="c1", turn_index=0, timestamp=1, query="héllo 'world' ✓",
             llm_id="m1", response="MATCH (n) RETURN n"),
    Feedback(event_id="f1", user_id="u1", turn_id="t1", timestamp=2, signal=Score(score=8)),
    RouteRequest(request_id="r1", user_id="u1", query="next?", candidates=["m1"]),
    RouteDecision(request_id="r1", user_id="u1", chosen_llm_id="m1", scores={"m1": 1.0}, model_version="v0"),
    DeadLetter.of("chat.turns", b"{oops", "message is not valid JSON"),
]


def test_topics_created_once(settings):
    created = create_topics(settings)
    assert sorted(created) == sorted(settings.topics.all())
    assert create_topics(settings) == []


@pytest.mark.parametrize("codec", ["none", "gzip"])
def test_every_event_type_round_trips(settings, codec):
    """Uncompressed and gzip batches (PREFSTREAM_KAFKA_COMPRESSION) read back the same."""
    settings = settings.model_copy(update={"kafka_compression": codec})
    assert producer_kwargs(settings)["compression_type"] == (None if codec == "none" else codec)
    create_topics(settings)
    topic = settings.topics.turns
    producer = KafkaProducer(**producer_kwargs(settings))
    for e in EVENTS:
        producer.send(topic, key=e.type.encode(), value=e.to_bytes()).get(timeout=10)
    producer.close()

    consumer = KafkaConsumer(topic, **consumer_kwargs(settings, group_id="roundtrip"))
    got = []
    deadline = time.monotonic() + 30
    while len(got) < len(EVENTS) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            got.extend(parse_any(r.value) for r in records)
    consumer.close()
    assert sorted(got, key=lambda e: e.type) == sorted(EVENTS, key=lambda e: e.type)


def test_gzip_batches_are_read_by_aiokafka_as_faust_reads_them(settings):
    """The ingest (Faust) consumes with aiokafka: a gzip batch from the SDK's producer settings reaches it intact."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    settings = settings.model_copy(update={"kafka_compression": "gzip"})
    create_topics(settings)
    producer = KafkaProducer(**producer_kwargs(settings, linger_ms=20))
    for e in EVENTS:
        producer.send(settings.topics.feedback, value=e.to_bytes())
    producer.close()

    async def read() -> list:
        c = AIOKafkaConsumer(settings.topics.feedback, bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", fetch_max_wait_ms=50)
        await c.start()
        out: list = []
        try:
            async with asyncio.timeout(30):
                while len(out) < len(EVENTS):
                    batches = await c.getmany(timeout_ms=200)
                    out.extend(parse_any(r.value) for rs in batches.values() for r in rs)
        finally:
            await c.stop()
        return out

    assert sorted(asyncio.run(read()), key=lambda e: e.type) == sorted(EVENTS, key=lambda e: e.type)
