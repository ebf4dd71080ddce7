"""A kill -9 of the Tansu broker on durable (S3) storage loses no acknowledged record and no committed offset.

The local stack runs Tansu on ``memory://``; this proves that a deployment which needs restarts to be safe
can point the same broker at S3 (here the local ``localbucket`` server) and keep both the log and the
consumer groups' positions. Nothing here reads end offsets (infra.md, Kafka quirk 2).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata

from stack import services
from prefstream.config import Settings
from prefstream.procs import alive, free_port, stop, wait_until
from stack.s3_local import start_broker_on_s3, start_s3
from streams.kafka_config import consumer_kwargs, producer_kwargs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOPIC = "durable"
GROUP = "durable-group"
PARTITIONS = 2
N = 200
#: Offsets the group commits before the kill: a different point in each partition.
COMMIT = {0: 60, 1: 40}


def _poll_until(consumer: KafkaConsumer, done: Callable[[list[ConsumerRecord]], bool],
                timeout: float = 60) -> list[ConsumerRecord]:
    got: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    while not done(got):
        assert time.monotonic() < deadline, f"timed out after {len(got)} records"
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(records)
    return got


def _by_partition(records: list[ConsumerRecord]) -> dict[int, list[tuple[int, bytes, bytes]]]:
    out: dict[int, list[tuple[int, bytes, bytes]]] = {p: [] for p in range(PARTITIONS)}
    for r in records:
        out[r.partition].append((r.offset, r.key, r.value))
    return out


@pytest.mark.timeout(180)
def test_records_and_group_offsets_survive_broker_kill_9(tmp_path):
    logs = tmp_path / "logs"
    s3 = start_s3(free_port(), tmp_path / "s3", logs)
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    # Each fetch lists the partition's objects in the bucket (~65 ms): a short fetch wait starves the reader.
    settings = Settings(kafka_bootstrap=bootstrap, kafka_fetch_wait_ms=1000)
    tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    expected: dict[int, list[tuple[int, bytes, bytes]]] = {p: [] for p in range(PARTITIONS)}
    broker = None
    try:
        broker = start_broker_on_s3(s3, port, logs)
        services.wait_broker(broker, bootstrap)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="durable-admin")
        admin.create_topics([NewTopic(name=TOPIC, num_partitions=PARTITIONS, replication_factor=1)])
        admin.close()

        producer = KafkaProducer(**producer_kwargs(settings))  # acks=all; each send is acknowledged before the next
        for i in range(N):
            key, value = f"k{i:03d}".encode(), f"value {i} \u00fc".encode()
            meta = producer.send(TOPIC, key=key, value=value, partition=i % PARTITIONS).get(timeout=30)
            expected[meta.partition].append((meta.offset, key, value))
        producer.close()
        for p in range(PARTITIONS):
            assert [o for o, _, _ in expected[p]] == list(range(N // PARTITIONS))

        consumer = KafkaConsumer(TOPIC, **consumer_kwargs(settings, group_id=GROUP))
        seen = _by_partition(_poll_until(
            consumer, lambda got: all(len(v) >= COMMIT[p] for p, v in _by_partition(got).items())))
        for p in range(PARTITIONS):
            assert seen[p] == expected[p][:len(seen[p])]
        consumer.commit({TopicPartition(TOPIC, p): OffsetAndMetadata(o, "", -1) for p, o in COMMIT.items()})
        assert {tp.partition: consumer.committed(tp) for tp in tps} == COMMIT
        consumer.close()

        os.kill(broker.pid, signal.SIGKILL)  # the broker only; the S3 server keeps running
        wait_until(lambda: not alive(broker.pid), 10, "killed broker gone")
        broker = start_broker_on_s3(s3, port, logs)
        services.wait_broker(broker, bootstrap)

        reader = KafkaConsumer(**consumer_kwargs(settings, group_id=None))
        reader.assign(tps)
        reader.seek_to_beginning(*tps)
        after = _by_partition(_poll_until(reader, lambda got: len(got) >= N))
        reader.close()
        assert after == expected

        resumed = KafkaConsumer(TOPIC, **consumer_kwargs(settings, group_id=GROUP))
        assert {tp.partition: resumed.committed(tp) for tp in tps} == COMMIT
        got = _by_partition(_poll_until(resumed, lambda got: all(_by_partition(got).values())))
        resumed.close()
        for p in range(PARTITIONS):
            assert got[p][0] == expected[p][COMMIT[p]], f"partition {p} did not resume at its committed offset"
    finally:
        for proc in (broker, s3.proc):
            if proc is not None:
                stop(proc)
