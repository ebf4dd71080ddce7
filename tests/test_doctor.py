"""`prefstream doctor` against real servers (issue 21): it finds a missing topic and missing graph indexes,
says the fix, and `--fix` creates them. `status` reports the same servers as up."""

from __future__ import annotations

import uuid

import pytest

from stack import health

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh(settings):
    """The session's real broker and graph server, with a topic and a graph name nobody created yet."""
    tag = uuid.uuid4().hex[:8]
    topics = settings.topics.model_copy(update={"dead_letter": f"doctor-dead-{tag}"})
    return settings.model_copy(update={"topics": topics, "graph_name": f"doctor-{tag}"})


def _by_name(checks):
    return {c.component: c for c in checks}


def test_doctor_finds_a_missing_topic_and_missing_indexes_then_fixes_them(fresh):
    from streams.kafka_config import create_topics

    create_topics(fresh.model_copy(update={"topics": fresh.topics.model_copy(
        update={"dead_letter": fresh.topics.requests}) }))  # every topic but the new dead-letter one
    checks = _by_name(health.doctor(fresh))
    assert checks["broker"].ok and "answers the Kafka protocol" in checks["broker"].detail
    dead = checks[f"topic {fresh.topics.dead_letter}"]
    assert not dead.ok and dead.detail == "missing" and "doctor --fix" in dead.fix
    assert checks[f"topic {fresh.topics.turns}"].ok
    idx = checks["graph indexes"]
    assert not idx.ok and "User.user_id" in idx.detail and "Turn.position" in idx.detail and idx.fix

    fixed = _by_name(health.doctor(fresh, fix=True))
    assert fixed[f"topic {fresh.topics.dead_letter}"].ok
    assert fixed["graph indexes"].ok and fixed["graph indexes"].detail == "all present"
    assert all(c.ok for name, c in fixed.items() if name != "ray")  # no Ray in this test session
    assert health.print_checks(list(fixed.values()), as_json=False) in (0, 1)


def test_doctor_finds_stale_win_counts_and_fixes_them(fresh):
    """A rating the graph kept without its recount: doctor names the user count that differs, --fix rebuilds it."""
    import numpy as np

    from graphstore import open_store
    from prefstream.events import ChatTurn, Feedback

    with open_store(fresh) as store:
        turns = [ChatTurn(event_id=f"t{i}", user_id="ann", conversation_id="c", turn_index=0, timestamp=1000 + i,
                          query="why", llm_id=m, response="because") for i, m in enumerate(["m1", "m2"])]
        store.upsert_turns([(t, np.ones(384, np.float32), None) for t in turns])
        store.upsert_feedback([Feedback(event_id=f"f{i}", user_id="ann", turn_id=f"t{i}", timestamp=2000,
                                        signal={"kind": "thumbs", "up": i == 0}) for i in range(2)])
        assert health.win_counts_doctor(store, fix=False).ok
        store.graph.query("MATCH (r:Response {response_id: 't1'}) SET r.rating = 2.0")  # its recount lost
        assert store.user_win_counts(["ann"]) == [{"m1": (1.0, 1.0), "m2": (0.0, 1.0)}]
    checks = _by_name(health.doctor(fresh))
    bad = checks["graph win counts"]
    assert not bad.ok and bad.detail.startswith("1 of the 1 most recent users'") and "doctor --fix" in bad.fix
    fixed = _by_name(health.doctor(fresh, fix=True))["graph win counts"]
    assert fixed.ok and "differed from their ratings: rebuilt" in fixed.detail
    with open_store(fresh) as store:
        assert store.user_win_counts(["ann"]) == [{"m1": (0.0, 1.0), "m2": (1.0, 1.0)}]
    assert _by_name(health.doctor(fresh))["graph win counts"].ok


def test_status_reports_reachable_servers_and_counting(fresh):
    from graphstore import open_store

    with open_store(fresh) as store:  # creates the schema
        assert store.missing_indexes() == []
    checks = _by_name(health.status(fresh))
    assert checks["graph"].ok and "0 users" in checks["graph"].detail
    assert "count-based scorer" in checks["model"].detail
    assert checks["broker"].component == "broker" and "topics" in checks["broker"].detail


def test_registry_file_names_match_the_trainer():
    from trainer.count_scorer import RATES_FILE
    from trainer.refresh import CYCLES_FILE

    assert (health.RATES_FILE, health.CYCLES_FILE) == (RATES_FILE, CYCLES_FILE)

def test_status_says_when_the_last_cycle_rebuilt_kept_counts(tmp_path):
    """`prefstream status`: the last cycle's line names the users whose kept win counts it rebuilt, or its failed
    check, and says nothing more when it found them right."""
    import json
    from dataclasses import asdict

    from prefstream.config import Settings
    from stack.health import model_status
    from trainer.refresh import CYCLES_FILE, CycleRecord

    def trainer_line(counts: dict) -> str:
        rec = asdict(CycleRecord(1.7e9, None, None, False, "why", {"counts": counts}))
        (tmp_path / CYCLES_FILE).write_text(json.dumps(rec) + "\n")
        return {c.component: c.detail for c in model_status(Settings(model_dir=tmp_path))}["trainer"]

    rebuilt = trainer_line({"users": 256, "answers": 9, "differed": 3, "rebuilt": 2, "rebuilt_ids": ["a", "b"],
                            "still_off": []})
    assert "rebuilt the kept win counts of 2 of the 256 users it checked (a, b;" in rebuilt
    assert "failed: timed out" in trainer_line({"users": 256, "error": "timed out"})
    assert trainer_line({"users": 256, "answers": 9, "differed": 1, "rebuilt": 0}).endswith("why")
