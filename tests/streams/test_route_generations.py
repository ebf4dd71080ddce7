"""Route topics by generation (issue 18, bounded broker memory): requests and replies go to one topic per
generation, routers and clients follow the generations around now, and the old ones are deleted."""

from __future__ import annotations

import threading
import time

import pytest

from streams import route_topics
from streams.client import PrefstreamClient
from streams.route_loop import RouteLoop
from tests.streams.test_route_static import Decider


def test_topic_names_follow_the_request_timestamp(settings):
    off = settings
    assert route_topics.request_topic(off, 123_456) == off.topics.requests
    assert route_topics.reply_topic(off, off.topics.requests) == off.topics.decisions
    assert route_topics.window(off, off.topics.decisions) == [off.topics.decisions]
    s = settings.model_copy(update={"route_generation_s": 60})
    assert route_topics.request_topic(s, 59_999) == f"{s.topics.requests}.g0"
    assert route_topics.request_topic(s, 60_000) == f"{s.topics.requests}.g1"
    assert route_topics.reply_topic(s, f"{s.topics.requests}.g7") == f"{s.topics.decisions}.g7"
    # names are reused: generation N in slot N mod slots (window 2 behind + now + 2 ahead, and one spare)
    assert route_topics.slots(s) == 6 and route_topics.topic_of(s, "r", 13) == "r.g1"
    assert route_topics.request_topic(s, 60_000 * 13) == f"{s.topics.requests}.g1"
    assert route_topics.window(s, s.topics.requests, 10) == [f"{s.topics.requests}.g{g}" for g in (2, 3, 4, 5)]


def test_generations_kept_span_the_keep_time(settings):
    """A request's generation is kept route_keep_s after it closes, and never fewer than two generations."""
    keep = {(gen_s, keep_s): route_topics.keep_behind(settings.model_copy(
        update={"route_generation_s": gen_s, "route_keep_s": keep_s})) for gen_s, keep_s in
        [(5, 20), (6, 20), (30, 20), (1, 0), (0, 20)]}
    assert keep == {(5, 20): 4, (6, 20): 4, (30, 20): 2, (1, 0): 2, (0, 20): 0}
    s = settings.model_copy(update={"route_generation_s": 5, "route_keep_s": 20})
    assert route_topics.slots(s) == 8  # 4 behind + now + 2 ahead + the spare
    assert route_topics.window(s, "r", 10) == [f"r.g{g % 8}" for g in range(6, 12)]


def test_group_assignment_is_refused_with_generations(settings):
    s = settings.model_copy(update={"route_generation_s": 60, "router_assignment": "group"})
    with pytest.raises(ValueError, match="ROUTER_ASSIGNMENT=static"):
        RouteLoop(s, Decider("w"))._consumer()


def test_the_local_stack_rotates_route_topics_unless_told_otherwise(tmp_path):
    """`prefstream up` turns generations on for its memory-only broker; an explicit setting (0 included) or group
    assignment keeps one topic each."""
    from prefstream.config import Settings
    from stack.local import LOCAL_ROUTE_GENERATION_S, local_settings

    assert LOCAL_ROUTE_GENERATION_S > 0
    assert local_settings(Settings(run_dir=tmp_path)).route_generation_s == LOCAL_ROUTE_GENERATION_S
    assert local_settings(Settings(run_dir=tmp_path, route_generation_s=0)).route_generation_s == 0
    assert local_settings(Settings(run_dir=tmp_path, route_generation_s=7)).route_generation_s == 7
    assert local_settings(Settings(run_dir=tmp_path, router_assignment="group")).route_generation_s == 0


def test_a_client_of_the_local_stack_follows_its_recorded_generations(tmp_path):
    """The SDK's default settings take the generation length that `up` recorded, only for that stack's broker."""
    import json

    from prefstream.config import Settings
    from prefstream.options import with_stack_generations

    (tmp_path / "stack.json").write_text(json.dumps({"procs": [], "settings": {
        "kafka_bootstrap": "127.0.0.1:19092", "route_generation_s": 30}}))
    mine = Settings(run_dir=tmp_path, kafka_bootstrap="127.0.0.1:19092")
    assert with_stack_generations(mine).route_generation_s == 30
    other = Settings(run_dir=tmp_path, kafka_bootstrap="kafka.example:9092")
    assert with_stack_generations(other).route_generation_s == 0  # another cluster: not that stack's topics
    told = Settings(run_dir=tmp_path, kafka_bootstrap="127.0.0.1:19092", route_generation_s=0)
    assert with_stack_generations(told).route_generation_s == 0
    assert with_stack_generations(Settings(run_dir=tmp_path / "none")).route_generation_s == 0


def kept_names(s, base: str, gen: int) -> set[str]:
    """The topics of ``base`` that maintain(s, gen) keeps: the slots of gen-keep_behind .. gen+AHEAD."""
    return {route_topics.topic_of(s, base, x) for x in range(gen - route_topics.keep_behind(s),
                                                              gen + route_topics.AHEAD + 1)}


@pytest.mark.integration
def test_a_slot_is_deleted_after_the_routers_offsets_on_it_are_reset(settings, topics):
    """The spare slot's name will hold a later generation: the routers' group must not resume there at an offset
    of the earlier one, so maintain() sets the group's offsets on it back to 0 before deleting it."""
    from kafka import KafkaAdminClient, KafkaConsumer, OffsetAndMetadata, TopicPartition

    from streams.kafka_config import consumer_kwargs, create_missing

    s = settings.model_copy(update={"route_generation_s": 3600, "route_keep_s": 0, "router_assignment": "static"})
    g = route_topics.current(s)
    spare = route_topics.topic_of(s, s.topics.requests, g + route_topics.AHEAD + 1)
    assert spare not in kept_names(s, s.topics.requests, g)
    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    consumer = KafkaConsumer(**consumer_kwargs(s, s.router_group))
    try:
        create_missing(admin, {spare: {}}, 2, set(admin.list_topics()))
        consumer.commit({TopicPartition(spare, p): OffsetAndMetadata(7, None, -1) for p in (0, 1)})
        seen = {}  # the group's offsets on the spare when it is deleted
        delete = admin.delete_topics

        def recording_delete(names, *a, **kw):
            offsets = admin.list_group_offsets(s.router_group).get(s.router_group, {})
            seen.update({tp.partition: om.offset for tp, om in offsets.items() if tp.topic in names})
            return delete(names, *a, **kw)

        admin.delete_topics = recording_delete
        out = route_topics._delete(admin, [spare], consumer)
        assert out == [spare] and seen == {0: 0, 1: 0}
        assert spare not in admin.list_topics()
    finally:
        consumer.close()
        admin.close()


@pytest.mark.integration
@pytest.mark.slow
def test_requests_across_generations_are_answered_and_old_generations_deleted(settings, topics):
    from kafka import KafkaAdminClient

    # kept 6 s: three generations behind, one more than the least
    s = settings.model_copy(update={"route_generation_s": 2, "route_keep_s": 6, "router_assignment": "static"})
    loop = RouteLoop(s, Decider("w0"))
    ready = threading.Event()
    t = threading.Thread(target=loop.run, args=(ready,), daemon=True)
    t.start()
    assert ready.wait(30)
    first = route_topics.current(s)
    try:
        with PrefstreamClient(s) as c:
            futs, gens = [], set()
            give_up = time.monotonic() + 60
            # requests in 4+ generations, the reader following (counted by the requests sent, not by the clock: a
            # client stalled through a whole generation on a loaded machine must not make the test miss one)
            while len(gens) < 4 and time.monotonic() < give_up:
                futs.append(c.route_async("u1", "hello", deadline_ms=60_000))
                gens.add(route_topics.generation(s, futs[-1].request.timestamp))
                time.sleep(0.2)
            replies = [f.result(timeout=30) for f in futs]
        plain = settings.model_copy(update={"router_assignment": "static"})  # a client without generations
        with PrefstreamClient(plain) as c:
            assert c.route("u2", "hello", deadline_ms=60_000, timeout=30).scorer == "w0"
    finally:
        loop.stop()
        t.join(15)
    assert [d.request_id for d in replies] == [f.request.request_id for f in futs]
    assert all(d.chosen_llm_id == "m-a" and d.scorer == "w0" for d in replies)
    # every request was sent to its generation's topic, and the router answered each on the same generation
    assert len(gens) >= 4 and min(gens) >= first
    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    try:
        route_topics.maintain(s)
        names = set(admin.list_topics())
    finally:
        admin.close()
    now = route_topics.current(s)
    for base in (s.topics.requests, s.topics.decisions):
        present = {n for n in names if n.startswith(base + ".g")}
        assert present == kept_names(s, base, now), (base, sorted(present))
        assert len(present) == route_topics.slots(s) - 1  # every slot but the spare


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("renewed", [True, False])
def test_a_deleted_generation_is_not_brought_back_by_a_producer(settings, topics, renewed):
    """kafka-python asks for every topic a producer ever sent to, and the local broker creates a topic it is
    asked about: one long-lived producer re-creates the generations that maintain() deleted (the control case,
    renewed=False, shows it). The GenerationProducer, renewed per generation, asks only for its own."""
    from kafka import KafkaAdminClient, KafkaProducer

    from streams.kafka_config import producer_kwargs

    s = settings.model_copy(update={"route_generation_s": 1, "route_keep_s": 0})
    producer = route_topics.GenerationProducer(s, **producer_kwargs(s)) if renewed \
        else KafkaProducer(**producer_kwargs(s))
    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    back = []
    try:
        start = route_topics.current(s)
        while (g := route_topics.current(s)) < start + route_topics.keep_behind(s) + 4:
            route_topics.maintain(s, g)  # creates the slots of g-2 .. g+2, deletes the spare
            producer.send(route_topics.topic_of(s, s.topics.requests, g), value=b"x").get(timeout=10)  # a new name
            old = {n for n in admin.list_topics() if n.startswith(s.topics.requests + ".g")} \
                - kept_names(s, s.topics.requests, g)
            back += sorted(old)
            time.sleep(max(0.0, (g + 1) * 1.0 - time.time()) + 0.05)  # into the next generation
    finally:
        producer.close()
        admin.close()
    assert (back == []) == renewed, back
