"""Fuzzing the ingest edge: thousands of seeded bad events through the real broker, a real Faust worker
process and the real graph server, interleaved with good ones; plus a unit-level fuzz of ``parse_event``."""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter

import pytest

from prefstream.events import ChatTurn, DeadLetter, Feedback, InvalidEvent, LLMRegistered, RouteRequest, parse_event
from tests.reliability.fuzzgen import BAD_CLASSES, bad_events, good_feedback, good_turn
from tests.streams.conftest import IngestWorker, read_all, wait_for

SEED = 20261123
# CI runs 3,000; the 10,000-event run: PREFSTREAM_TEST_FUZZ_EVENTS=10000 pytest tests/reliability/test_fuzz.py
N_BAD = int(os.environ.get("PREFSTREAM_TEST_FUZZ_EVENTS", "3000"))
N_GOOD = 300


def graph_ids(s, query: str) -> list[str]:
    """One id column of a read-only query, through the plain falkordb client (the store only runs its own
    Cypher constants)."""
    from urllib.parse import urlparse

    from falkordb import FalkorDB

    u = urlparse(s.graph_uri)
    db = FalkorDB(host=u.hostname, port=u.port)
    try:
        return sorted(r[0] for r in db.select_graph(s.graph_name).ro_query(query).result_set)
    finally:
        db.connection.close()


# --- integration: the real worker ------------------------------------------------------------------
@pytest.fixture
def fuzz_settings(settings):
    # unknown LLMs would otherwise each wait 10 s for the catalog to catch up
    return settings.model_copy(update={"unknown_llm_grace_s": 0.05})


@pytest.fixture
def ingest(fuzz_settings, tmp_path):
    """A real Faust ingest worker on fresh topics, with LLMs m1 and m2 already in the catalog (good turns must
    not race their LLM's registration: the grace is tiny here); yields (settings, store, worker)."""
    from graphstore import open_store
    from streams.client import PrefstreamClient
    from streams.kafka_config import create_topics

    s = fuzz_settings
    create_topics(s)
    store = open_store(s)
    store.ensure_schema()
    worker = IngestWorker(s, tmp_path / "ingest.log").start()
    try:
        worker.wait_ready()
        with PrefstreamClient(s) as c:
            c.register_llm("m1", "a small model", 0.1, 0.2)
            c.register_llm("m2", "a large model", 1.0, 2.0)
            c.flush()
        wait_for(lambda: {"m1", "m2"} <= set(store.llm_catalog()), 120, "the two LLMs in the catalog")
        yield s, store, worker
    finally:
        worker.stop()
        store.clear()
        store.close()


@pytest.mark.integration
@pytest.mark.slow
def test_fuzzed_events_are_dead_lettered_and_good_ones_land_once(ingest):
    from streams.client import PrefstreamClient

    s, store, worker = ingest
    t0 = time.monotonic()
    bad = bad_events(N_BAD, SEED, tag="z")
    rng = random.Random(SEED + 1)
    with PrefstreamClient(s) as c:
        goods = [("turns", json.dumps(good_turn(i, "g")).encode()) for i in range(N_GOOD)]
        goods += [("feedback", json.dumps(good_feedback(i, "g")).encode()) for i in range(N_GOOD)]
        stream = [(topic, raw) for _, topic, raw in bad] + goods
        rng.shuffle(stream)
        for i, (topic, raw) in enumerate(stream):
            c.publish_raw(getattr(s.topics, topic), raw, key=f"u{i % 7}" if i % 3 else None)
        c.flush(120)
        assert worker.proc.poll() is None, "ingest worker died while the fuzz was being published"

        dead = read_all(s, s.topics.dead_letter, expect=len(bad), timeout=max(150, len(bad) // 20))
    letters = [DeadLetter.model_validate(d) for d in dead]
    assert worker.proc.poll() is None, "ingest worker died"
    # every bad event dead-lettered exactly once, with its original bytes and a reason
    assert len(letters) == len(bad), (len(letters), len(bad))
    assert Counter(dl.raw for dl in letters) == Counter(raw for _, _, raw in bad)
    assert all(dl.reason.strip() for dl in letters)
    by_raw = {raw: (name, topic) for name, topic, raw in bad}
    for dl in letters:
        name, topic = by_raw[dl.raw]
        assert dl.topic == getattr(s.topics, topic), (name, dl.topic)
        if name == "unknown_llm":
            assert "unknown llm_id" in dl.reason
        elif name == "huge_message":
            assert "the limit is 262144" in dl.reason
    # every good event in the graph exactly once
    wait_for(lambda: store.count("Turn") >= N_GOOD and store.count("Feedback") >= N_GOOD, 120,
             "the good turns and feedback")
    assert store.count("Turn") == N_GOOD
    assert store.count("Feedback") == N_GOOD
    assert graph_ids(s, "MATCH (t:Turn) RETURN t.turn_id") == sorted(f"gt{i}" for i in range(N_GOOD))
    assert graph_ids(s, "MATCH (f:Feedback) RETURN f.feedback_id") == sorted(f"gf{i}" for i in range(N_GOOD))
    assert store.count("LLM") == 2  # no ghost LLM and no injected node
    assert worker.proc.poll() is None
    print(f"fuzz: {len(bad)} bad + {2 * N_GOOD} good events in {time.monotonic() - t0:.1f} s; classes "
          f"{dict(Counter(n for n, _, _ in bad))}")


# --- unit: parse_event never raises anything but InvalidEvent --------------------------------------
def _mutate(rng: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    for _ in range(rng.randrange(1, 6)):
        op = rng.randrange(5)
        if op == 0 and b:
            del b[rng.randrange(len(b)):]
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 2:
            at = rng.randrange(len(b) + 1)
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        elif op == 3 and b:
            at = rng.randrange(len(b))
            b[at:at] = rng.choice([b'"', b"{", b"}", b"[", b"]", b",", b":", b"null", b"1e999", b"NaN", b"-",
                                   b"\\u0000", b"\\ud800", b"true"])
        else:
            i, j = sorted(rng.randrange(len(b) + 1) for _ in range(2))
            b[i:j] = b[i:j][::-1]
    return bytes(b)


def _random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**63, -(2**70), 10_001, rng.randrange(-10**6, 10**6)])
    if kind == 3:
        return rng.choice([0.0, -0.0, 1e308, float("inf"), float("nan"), rng.uniform(-20, 20)])
    if kind == 4:
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0xD7FF),
                                       rng.randrange(0xE000, 0x10FFFF)])) for _ in range(rng.randrange(0, 12)))
    if kind == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    keys = ["type", "event_id", "user_id", "conversation_id", "turn_index", "timestamp", "query", "llm_id",
            "response", "turn_id", "signal", "kind", "score", "scale_min", "scale_max", "up", "schema_version",
            "rating", "candidates", "request_id", "preferred_llm_id", "rejected_llm_id", "rejected_turn_id"]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(0, 8))}


MODELS = [ChatTurn, Feedback, LLMRegistered, RouteRequest]


def test_parse_event_raises_only_invalid_event_on_seeded_garbage():
    rng = random.Random(SEED)
    seeds = [json.dumps(good_turn(i, "s")).encode() for i in range(20)]
    seeds += [json.dumps(good_feedback(i, "s")).encode() for i in range(20)]
    seeds += [raw for _, _, raw in bad_events(400, SEED, tag="s", huge_max=5)]
    outcomes = Counter()
    for n in range(20_000):
        r = n % 3
        if r == 0:
            raw = _mutate(rng, rng.choice(seeds))
        elif r == 1:
            raw = json.dumps(_random_json(rng)).encode()
        else:
            raw = json.dumps({**json.loads(rng.choice(seeds[:40])),
                              rng.choice(["signal", "query", "turn_index", "timestamp", "user_id", "type"]):
                                  _random_json(rng)}).encode()
        model = MODELS[n % len(MODELS)]
        try:
            parse_event(raw, model)
            outcomes["accepted"] += 1
        except InvalidEvent as exc:
            assert str(exc), raw
            outcomes["refused"] += 1
        # any other exception fails the test with the raw bytes in the traceback
    assert outcomes["refused"] > 15_000, outcomes


@pytest.mark.parametrize("name", sorted(BAD_CLASSES))
def test_every_bad_class_is_refused_by_validation(name):
    topic, maker = BAD_CLASSES[name]
    rng = random.Random(SEED)
    for j in range(50):
        raw = maker(rng, j, "c")
        if name == "unknown_llm":  # valid on the wire; refused by the ingestor (integration test above)
            parse_event(raw, ChatTurn)
            continue
        with pytest.raises(InvalidEvent):
            parse_event(raw, ChatTurn if topic == "turns" else Feedback)


# Found by this fuzz (and fixed): json.loads raises RecursionError on deep nesting and ValueError on integers
# longer than Python's 4300-digit limit; both messages are < 256 KiB. They must be refused, not crash a worker.
@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"turn_index": ' + b"9" * 5000 + b"}",
                                 b'{"query": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"],
                         ids=["deep_nesting", "huge_int", "deep_nesting_in_field"])
def test_parse_event_refuses_pathological_json(raw):
    with pytest.raises(InvalidEvent):
        parse_event(raw, ChatTurn)


# The same bug end to end, as it was: one pathological message (100 KB of "[", far below the 256 KiB limit)
# crashed the Faust agent of its topic, and the good events behind it were never ingested (its offset was
# never committed, so a restarted worker crashed on it again). Now it is dead-lettered and the stream goes on.
@pytest.mark.integration
@pytest.mark.slow
def test_a_pathological_message_does_not_stall_the_topic(ingest):
    from streams.client import PrefstreamClient

    s, store, _ = ingest
    with PrefstreamClient(s) as c:
        c.publish_raw(s.topics.turns, json.dumps(good_turn(0, "p")).encode(), key="u0")
        c.flush()
        wait_for(lambda: store.count("Turn") >= 1, 60, "the first good turn")
        c.publish_raw(s.topics.turns, b"[" * 100_000, key="u0")
        for i in range(1, 6):
            c.publish_raw(s.topics.turns, json.dumps(good_turn(i, "p")).encode(), key="u0")
        c.flush()
    wait_for(lambda: store.count("Turn") >= 6, 45, "the good turns behind the pathological message")
    dead = read_all(s, s.topics.dead_letter, expect=1, timeout=10)
    assert [DeadLetter.model_validate(d).raw for d in dead] == [b"[" * 100_000]
