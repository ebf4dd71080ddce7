"""The route path end to end: client -> broker -> router loop (real graph, encoder, model) -> client."""

from __future__ import annotations

import threading

import pytest
import torch

from streams.client import PrefstreamClient
from streams.route_loop import RouteLoop
from tests.streams.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LLMS = {"m-small": ("A small, fast and cheap model for simple questions.", 0.1, 0.1),
        "m-math": ("A model specialized in mathematics and step-by-step reasoning.", 0.5, 0.5),
        "m-large": ("A large general model, strong on knowledge questions, expensive.", 2.0, 4.0)}


@pytest.fixture
def fixed_model(settings):
    """A fixed-seed GMTRouter published as the current version of the test's model registry."""
    from trainer.model import GMTRouter, GMTRouterConfig
    from trainer.registry import ModelRegistry

    torch.manual_seed(0)
    model = GMTRouter(GMTRouterConfig())
    return ModelRegistry(settings.model_dir).publish(model, promote=True)


@pytest.fixture
def router(settings, topics, store, fixed_model):
    from workers.build import build_engine

    with PrefstreamClient(settings) as c:
        for llm_id, (desc, pin, pout) in LLMS.items():
            c.register_llm(llm_id, desc, pin, pout)
    # a deadline far beyond the first batch's model load on a busy machine: these tests are about decisions,
    # not shedding (tests/streams/test_engine.py covers that)
    s = settings.model_copy(update={"route_deadline_ms": 60_000, "route_queue_target": 0.6})
    engine = build_engine(s)
    assert (engine.deadline_ms, engine.queue_target) == (60_000, 0.6)  # the settings reach the engine
    loop = RouteLoop(s, engine)
    ready = threading.Event()
    t = threading.Thread(target=loop.run, args=(ready,), daemon=True)
    t.start()
    ready.wait(30)
    yield engine
    loop.stop()
    t.join(15)


def test_requests_get_one_decision_each(settings, ingest_worker, router, store, fixed_model):
    wait_for(lambda: len(store.llm_catalog()) == 3, 60, "catalog ingested")
    with PrefstreamClient(settings) as c:
        futs = [c.route_async(f"user{i}", f"What is {i} + {i}?") for i in range(20)]
        decisions = [f.result(timeout=60) for f in futs]
        only_two = c.route("user0", "Integrate x^2", candidates=["m-small", "m-math"], timeout=30)
        cheap = c.route("user0", "Integrate x^2", budget=0.2, timeout=30)
        bad = c.route("user0", "hello", candidates=["m-small", "not-registered"], timeout=30)
    assert [d.request_id for d in decisions] == [f.request.request_id for f in futs]
    for d in decisions:
        assert d.error is None and not d.fallback
        assert d.model_version == fixed_model
        assert set(d.scores) == set(LLMS) and d.chosen_llm_id == max(d.scores, key=d.scores.get)
        assert d.turn_ids == []  # unknown users: a cold-start decision from the shared weights
    assert set(only_two.scores) == {"m-small", "m-math"}
    assert set(cheap.scores) == {"m-small"}
    assert bad.chosen_llm_id is None and "not-registered" in bad.error
    wait_for(lambda: store.decision(decisions[0].request_id) is not None, 30, "decision recorded for audit")
    audit = store.decision(decisions[0].request_id)
    assert audit["model_version"] == decisions[0].model_version


def test_invalid_request_gets_an_error_reply(settings, router):
    from kafka import KafkaProducer

    from streams.kafka_config import producer_kwargs

    with PrefstreamClient(settings) as c:
        reply = c.expect("req-broken")
        p = KafkaProducer(**producer_kwargs(settings))
        p.send(settings.topics.requests, b'{"request_id": "req-broken", "user_id": "u1", "query": 7}').get(10)
        p.close()
        d = reply.result(timeout=60)
    assert d.chosen_llm_id is None and "query: Input should be a valid string" in d.error


def test_feedback_changes_the_users_next_decision(settings, ingest_worker, router, store):
    wait_for(lambda: len(store.llm_catalog()) == 3, 60, "catalog ingested")
    with PrefstreamClient(settings) as c:
        before = c.route("alice", "Solve 3x + 5 = 20", timeout=60)
        t = c.publish_turn(user_id="alice", conversation_id="c1", turn_index=0, query="Solve 2x = 10",
                           llm_id="m-math", response="x = 5")
        c.publish_feedback(user_id="alice", turn_id=t.event_id, thumbs_up=True)
        c.flush()
        wait_for(lambda: len(sg := store.user_subgraph("alice", 10)) == 1 and sg.rating[0] == 1.0, 60,
                 "turn and feedback in the graph")
        after = c.route("alice", "Solve 3x + 5 = 20", timeout=60)
    assert before.turn_ids == [] and after.turn_ids == [t.event_id]
    assert after.scores != before.scores


def test_a_router_refuses_to_start_on_a_graph_of_another_embedding_space(settings, store):
    """A router whose encoder is not the graph's (another backend, another model) would store and read query
    vectors of two spaces: it refuses to start, saying which spaces differ."""
    from graphstore.base import EmbeddingSpaceMismatch
    from workers.build import build_engine

    store.claim_embedding_space("another-encoder:onnx")
    with pytest.raises(EmbeddingSpaceMismatch, match="another-encoder:onnx vectors"):
        build_engine(settings)
