"""Ingest through the real broker, a real Faust worker process and the real graph server."""

from __future__ import annotations

import json

import pytest

from streams.client import PrefstreamClient
from tests.streams.conftest import read_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def publish_history(c: PrefstreamClient, n: int, prefix: str = "") -> None:
    for i in range(n):
        c.publish_turn(user_id=f"u{i % 5}", conversation_id=f"c{i % 5}", turn_index=i // 5,
                       query=f"question {i % 17} about 'quotes' and MATCH (n) DETACH DELETE n", llm_id="m1",
                       response=f"answer {i} ✓", event_id=f"{prefix}t{i}", timestamp=1_000 + i)
        c.publish_feedback(user_id=f"u{i % 5}", turn_id=f"{prefix}t{i}", score=float(1 + i % 10),
                           event_id=f"{prefix}f{i}", timestamp=1_000 + i)


def test_events_land_exactly_once_even_when_sent_twice(settings, ingest_worker, store):
    with PrefstreamClient(settings) as c:
        c.register_llm("m1", "a small model", 0.1, 0.2)
        publish_history(c, 60)
        publish_history(c, 60)  # the same events again: at-least-once producers do this
        c.flush()
    wait_for(lambda: store.count("Turn") >= 60 and store.count("Feedback") >= 60, 90, "60 turns and feedback")
    assert store.count("Turn") == 60
    assert store.count("Feedback") == 60
    assert store.count("Response") == 60
    assert store.count("Query") == 17  # one node per distinct text
    assert store.count("User") == 5
    sg = store.user_subgraph("u1", 20)
    assert len(sg) == 12 and list(sg.timestamps) == sorted(sg.timestamps)
    assert all(0.0 <= r <= 1.0 for r in sg.rating)


def test_restart_mid_stream_loses_and_duplicates_nothing(settings, ingest_worker, store):
    with PrefstreamClient(settings) as c:
        c.register_llm("m1", "a small model", 0.1, 0.2)
        publish_history(c, 100, "a")
        c.flush()
        wait_for(lambda: store.count("Turn") > 0, 90, "first turns")
        ingest_worker.kill()  # kill -9 in the middle of the stream
        publish_history(c, 100, "b")
        c.flush()
        ingest_worker.start()
        wait_for(lambda: store.count("Turn") >= 200 and store.count("Feedback") >= 200, 120, "all 200 turns")
    assert store.count("Turn") == 200
    assert store.count("Feedback") == 200
    assert store.count("Response") == 200


def test_bad_events_go_to_dead_letters_and_the_stream_continues(settings, ingest_worker, store):
    good = {"type": "chat_turn", "user_id": "u1", "conversation_id": "c1", "turn_index": 0, "timestamp": 5,
            "query": "q", "llm_id": "m1", "response": "r"}
    bad = [
        b'{"type": "chat_turn", "event_id": "x0"',  # truncated JSON
        json.dumps({**good, "event_id": "x1", "turn_index": "zero"}).encode(),  # wrong type
        json.dumps({**good, "event_id": "x2", "query": "y" * 40_000}).encode(),  # oversized text
        b"\xff\xfe\x00garbage",  # not UTF-8
        json.dumps({**good, "event_id": "x3", "user_id": "u1' OR 1=1 //"}).encode(),  # Cypher-looking id
        json.dumps({**good, "event_id": "x4", "llm_id": "never-registered"}).encode(),  # unknown LLM
    ]
    with PrefstreamClient(settings) as c:
        c.register_llm("m1", "a small model", 0.1, 0.2)
        for i, raw in enumerate(bad):
            c.publish_raw(settings.topics.turns, raw, key="u1")
            c.publish_raw(settings.topics.turns, json.dumps({**good, "event_id": f"ok{i}", "turn_index": i}).encode(),
                          key="u1")
        c.publish_raw(settings.topics.feedback, b'{"type": "feedback", "signal": {"kind": "stars"}}', key="u1")
        c.flush()
    dead = read_all(settings, settings.topics.dead_letter, expect=len(bad) + 1, timeout=90)
    reasons = sorted(d["reason"] for d in dead)
    assert len(dead) == len(bad) + 1, reasons
    for needle in ("not valid JSON", "turn_index: Input should be a valid integer", "at most 32000 characters",
                   "not valid UTF-8", "is not a valid id", "unknown llm_id 'never-registered'", "invalid Feedback"):
        assert any(needle in r for r in reasons), (needle, reasons)
    assert {d["topic"] for d in dead} == {settings.topics.turns, settings.topics.feedback}
    wait_for(lambda: store.count("Turn") >= len(bad), 60, "the good turns in between")
    assert store.count("Turn") == len(bad)
    assert ingest_worker.proc.poll() is None  # still running


def test_rewind_replays_into_a_graph_that_lost_its_writes(settings, ingest_worker, store):
    """The recovery path for a graph server that lost acknowledged writes: re-ingest from offset 0."""
    with PrefstreamClient(settings) as c:
        c.register_llm("m1", "a small model", 0.1, 0.2)
        publish_history(c, 30)
        c.flush()
    wait_for(lambda: store.count("Turn") >= 30 and store.count("Feedback") >= 30, 90, "30 turns and feedback")
    ingest_worker.stop()
    store.clear()  # what a kill -9 of a snapshot-only graph server can do to acknowledged writes
    assert store.count("Turn") == 0
    ingest_worker.start("--from-beginning")
    wait_for(lambda: store.count("Turn") >= 30 and store.count("Feedback") >= 30, 120, "the replay")
    assert store.count("Turn") == 30 and store.count("Feedback") == 30 and store.count("LLM") == 1
