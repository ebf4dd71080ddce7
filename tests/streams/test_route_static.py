"""Router workers share route.requests by a static split (issue 18's group stall): worker i of n reads the
partitions p % n == i with no rebalance, so fresh workers on a reused group answer at once, and a restarted
worker resumes from the offsets its predecessor committed."""

from __future__ import annotations

import threading

import pytest

from prefstream.events import RouteDecision
from streams.client import PrefstreamClient
from streams.route_loop import RouteLoop

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Decider:
    """Picks one LLM and says which worker decided (the engine itself is tested elsewhere)."""

    def __init__(self, name: str):
        self.name = name
        self.partitions: set[int] = set()

    def decide(self, requests, early=None):
        return [RouteDecision(request_id=r.request_id, user_id=r.user_id, chosen_llm_id="m-a", scores={"m-a": 1.0},
                              scorer=self.name) for r in requests]

    def record_decisions(self, decisions):
        pass


def start_workers(s, n: int) -> list[tuple[RouteLoop, threading.Thread]]:
    out = []
    for i in range(n):
        loop = RouteLoop(s, Decider(f"w{i}"), client_id=f"router-{i}", member=(i, n))
        ready = threading.Event()
        t = threading.Thread(target=loop.run, args=(ready,), daemon=True)
        t.start()
        assert ready.wait(30)
        out.append((loop, t))
    return out


def stop_workers(workers) -> None:
    for loop, t in workers:
        loop.stop()
    for loop, t in workers:
        t.join(15)


def route_all(s, n: int, tag: str) -> list[RouteDecision]:
    with PrefstreamClient(s) as c:
        futs = [c.route_async(f"{tag}-user{i}", "hello", deadline_ms=60_000) for i in range(n)]
        return [f.result(timeout=30) for f in futs]


def test_fresh_workers_on_a_reused_group_answer_every_partition_at_once(settings, topics):
    s = settings.model_copy(update={"router_assignment": "static"})
    workers = start_workers(s, 2)
    first = route_all(s, 40, "a")
    stop_workers(workers)
    assert {d.scorer for d in first} == {"w0", "w1"}  # both workers answered: every partition is read

    workers = start_workers(s, 2)  # fresh members, same group: the case that stalled under the group protocol
    second = route_all(s, 40, "b")  # each reply within 30 s (route_all), or the test fails
    stop_workers(workers)
    assert len({d.request_id for d in second}) == 40 and all(d.error is None for d in second)
    assert {d.scorer for d in second} == {"w0", "w1"}
    # no reply of the first round came again: the second pair resumed from the committed offsets
    assert not {d.request_id for d in second} & {d.request_id for d in first}


def test_a_worker_reads_only_its_share(settings, topics):
    from kafka import KafkaConsumer

    from streams.kafka_config import consumer_kwargs
    from streams.route_loop import static_share

    c = KafkaConsumer(**consumer_kwargs(settings, None))
    try:
        shares = [[tp.partition for tp in static_share(c, settings.topics.requests, i, 2)] for i in range(2)]
        with pytest.raises(ValueError):
            static_share(c, settings.topics.requests, 2, 2)
    finally:
        c.close()
    assert shares == [[0], [1]]  # the test topics have 2 partitions
