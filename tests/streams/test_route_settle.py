"""RouteLoop's commit rule, as a pure unit test: offsets are committed only after every reply is acked;
a reply the broker did not take rewinds the consumer to the batch instead (answered again, never lost)."""

from __future__ import annotations

from types import SimpleNamespace

from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError

from prefstream.config import Settings
from streams.route_loop import INTAKE_FACTOR, RouteLoop


class Acked:
    def get(self, timeout=None):
        return None


class NotAcked:
    def get(self, timeout=None):
        raise KafkaTimeoutError("no ack")


class Consumer:
    def __init__(self):
        self.commits, self.seeks = [], []

    def assignment(self):
        return {TopicPartition("req", 0), TopicPartition("req", 1)}

    def commit(self, offsets):
        self.commits.append(("sync", {tp: o.offset for tp, o in offsets.items()}))

    def commit_async(self, offsets, callback=None):
        self.commits.append(("async", {tp: o.offset for tp, o in offsets.items()}))

    def seek(self, tp, offset):
        self.seeks.append((tp, offset))


def records():
    return [SimpleNamespace(topic="req", partition=p, offset=o) for p, o in [(0, 5), (1, 9), (0, 6), (0, 7)]]


def test_commits_after_acks_the_offset_after_each_partitions_last_record():
    loop, consumer = RouteLoop(Settings(), decider=None), Consumer()
    assert loop._settle(([Acked(), Acked()], records()), consumer)
    assert loop._settle(([Acked()], records()[:1]), consumer, wait_commit=True)  # the last one, at shutdown
    assert consumer.commits == [("async", {TopicPartition("req", 0): 8, TopicPartition("req", 1): 10}),
                                ("sync", {TopicPartition("req", 0): 6})]
    assert consumer.seeks == [] and loop.handled == 5


def test_an_unacked_reply_rewinds_to_the_batch_and_commits_nothing():
    loop, consumer = RouteLoop(Settings(), decider=None), Consumer()
    assert not loop._settle(([Acked(), NotAcked()], records()), consumer)
    assert consumer.commits == [] and loop.handled == 0
    assert sorted(consumer.seeks) == [(TopicPartition("req", 0), 5), (TopicPartition("req", 1), 9)]


def test_backpressure_takes_only_what_fits_in_the_deadline():
    loop = RouteLoop(Settings(route_batch_size=64, route_deadline_ms=1000), decider=None)
    assert loop.batch_cap() == 64  # nothing measured yet
    for _ in range(3):
        loop.measured(1, 5000.0)  # warm-up batches (model load) do not count
    assert loop.batch_cap() == 64
    loop.measured(8, 8 * 2.0)  # 2 ms a request: 250 fit in half a second (a backlog, or shed requests)
    assert loop.batch_cap() == 250
    for _ in range(30):
        loop.measured(100, 100 * 0.1)  # nearly all shed: the intake stops at INTAKE_FACTOR x the batch size
    assert loop.batch_cap() == INTAKE_FACTOR * 64
    for _ in range(30):  # the router slows down to 50 ms a request: 10 fit in half the deadline
        loop.measured(10, 10 * 50.0)
    assert 9 <= loop.batch_cap() <= 11
    for _ in range(30):
        loop.measured(1, 5000.0)  # slower than the deadline itself: still one at a time, never zero
    assert loop.batch_cap() == 1
