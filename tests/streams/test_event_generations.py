"""Input-event topics by generation (streams/event_topics.py, streams/event_ingest.py): naming, the drain rule,
and the real path (SDK -> generation topics -> ingest worker process -> graph, drained generations deleted)."""

from __future__ import annotations

import json
import time

import pytest
from kafka import KafkaAdminClient, KafkaProducer

from prefstream.config import Settings
from prefstream.events import ChatTurn
from streams import dead_letter_topics, event_topics
from streams.client import PrefstreamClient
from streams.kafka_config import producer_kwargs
from tests.streams.conftest import read_all, wait_for


def test_events_are_named_by_the_generation_of_their_send_time():
    s = Settings(event_generation_s=60)
    g = event_topics.current(s)
    assert event_topics.topic(s, s.topics.turns) in (f"{s.topics.turns}.g{g}", f"{s.topics.turns}.g{g + 1}")
    assert event_topics.topic(s, s.topics.catalog) == s.topics.catalog  # the catalog stays one kept topic
    assert event_topics.topic(Settings(), Settings().topics.turns) == Settings().topics.turns  # off
    names = [f"{s.topics.feedback}.g12", f"{s.topics.turns}.g3", "other.g1", s.topics.turns, f"{s.topics.requests}.g2"]
    assert event_topics.generations(s, names) == [f"{s.topics.turns}.g3", f"{s.topics.feedback}.g12"]
    assert event_topics.parse(s, f"{s.topics.turns}.g7") == (s.topics.turns, 7)
    assert event_topics.closed(s, f"{s.topics.turns}.g7", now_s=60 * (7 + event_topics.CLOSED_AFTER))
    assert not event_topics.closed(s, f"{s.topics.turns}.g7", now_s=60 * (7 + event_topics.CLOSED_AFTER) - 1)


def test_a_topic_is_drained_only_when_closed_and_quiet_without_full_polls():
    d = event_topics.Drain(quiet_s=10, min_polls=2)
    is_closed = {"a": True, "b": True, "c": False}.get
    d.assigned(["a", "b", "c"], now=0)
    d.polled({}, full=False, now=1)
    assert d.drained(is_closed, now=9) == []  # quiet only since assigned
    d.polled({"a": 5}, full=False, now=5)
    assert d.drained(is_closed, now=12) == ["b"]  # a gave records at 5; c is still open
    d.polled({}, full=True, now=13)  # a full poll may have left records of any topic unread
    assert d.drained(is_closed, now=24) == []  # quiet for long enough, but one poll since the full one
    d.polled({}, full=False, now=24)
    d.polled({}, full=False, now=24)
    assert d.drained(is_closed, now=24) == ["a", "b"]
    d.assigned(["a"], now=25)
    assert d.drained(is_closed, now=40) == ["a"]  # b is no longer assigned


def test_a_client_of_the_stack_follows_its_event_generations(tmp_path):
    from prefstream.options import with_stack_generations

    run = tmp_path / "run"
    run.mkdir()
    (run / "stack.json").write_text(json.dumps({"settings": {"kafka_bootstrap": "127.0.0.1:9092",
                                                             "route_generation_s": 30, "event_generation_s": 600}}))
    s = with_stack_generations(Settings(run_dir=run))
    assert (s.route_generation_s, s.event_generation_s) == (30, 600)
    told = with_stack_generations(Settings(run_dir=run, event_generation_s=0))
    assert (told.route_generation_s, told.event_generation_s) == (30, 0)


def publish(c: PrefstreamClient, start: int, n: int) -> None:
    for i in range(start, start + n):
        c.publish_turn(user_id=f"u{i % 4}", conversation_id=f"c{i % 4}", turn_index=i, query=f"question {i % 9}",
                       llm_id="m1", response=f"answer {i}", event_id=f"t{i}")
        c.publish_feedback(user_id=f"u{i % 4}", turn_id=f"t{i}", thumbs_up=i % 2 == 0, event_id=f"f{i}")
    c.flush()


def generation_topics(s: Settings) -> list[str]:
    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    try:
        return event_topics.generations(s, admin.list_topics())
    finally:
        admin.close()


@pytest.fixture
def settings(broker, graph_server, tmp_path) -> Settings:
    """The streams fixtures (ingest worker, store) on settings with two-second event generations and hourly
    dead-letter generations."""
    from tests.conftest import private_settings

    return private_settings(broker, graph_server, tmp_path).model_copy(
        update={"event_generation_s": 2, "dead_letter_generation_s": 3600})


@pytest.mark.integration
@pytest.mark.slow
def test_events_across_generations_are_ingested_once_and_drained_generations_deleted(settings, ingest_worker,
                                                                                        store):
    s, worker = settings, ingest_worker
    with PrefstreamClient(s) as c:
        c.register_llm("m1", "a small model", 0.1, 0.2)
        publish(c, 0, 40)
        wait_for(lambda: store.count("Turn") > 0, 90, "first turns")
        worker.kill()  # kill -9 while generations are being read
        first = event_topics.current(s)
        for k in range(3):  # three more generations, one of them while the worker is down
            time.sleep(2.0)
            publish(c, 40 + 20 * k, 20)
            if k == 0:
                worker.start()
        dead_topics = [dead_letter_topics.topic(s)]  # the dead-letter generation of now (and below, of later)
        c.publish_raw(s.topics.turns, b'{"type": "chat_turn"', key="u1")  # malformed, into a generation
        c.publish_raw(s.topics.catalog, b'{"type": "llm_registered"', key="m9")  # malformed, read by Faust
        c.flush()
        used = {f"{s.topics.turns}.g{g}" for g in range(first - 1, event_topics.current(s) + 1)}
    wait_for(lambda: store.count("Turn") >= 100 and store.count("Feedback") >= 100, 120, "all 100 turns")
    assert store.count("Turn") == 100 and store.count("Feedback") == 100 and store.count("Response") == 100
    # both dead letters (the generation reader's and the Faust agent's) went to the dead-letter generation of
    # their send time, none to the plain topic
    dead = read_all(s, dead_topics[0], expect=2, timeout=60)
    if len(dead) < 2 and dead_letter_topics.topic(s) != dead_topics[0]:  # sent across an hour's end
        dead += read_all(s, dead_letter_topics.topic(s), expect=2 - len(dead), timeout=30)
    assert read_all(s, s.topics.dead_letter, expect=1, timeout=5) == []
    assert sorted(event_topics.parse(s, d["topic"])[0] if event_topics.parse(s, d["topic"]) else d["topic"]
                  for d in dead) == sorted([s.topics.turns, s.topics.catalog]), dead
    # every generation written to is deleted once closed and read to its end; the current ones stay
    wait_for(lambda: not used & set(generation_topics(s)), 90, "the used generations deleted")
    assert generation_topics(s), "the current and next generations exist"
    assert store.count("Turn") == 100
    # a late producer sends to a deleted generation: the broker re-creates it, and it is read from its start
    late = KafkaProducer(**producer_kwargs(s))
    late.send(sorted(used)[0], key=b"u1", value=ChatTurn(
        event_id="late", user_id="u1", conversation_id="c1", turn_index=999, timestamp=1_000, query="late question",
        llm_id="m1", response="late answer").to_bytes()).get(30)
    late.close()
    wait_for(lambda: store.count("Turn") == 101, 90, "the late turn")
