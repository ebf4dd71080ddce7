"""Isolation: a user's decision depends only on that user's graph and the shared weights.

Real graph server, real encoder, a fixed-seed model published to a real registry, the real RouteEngine.
"""

from __future__ import annotations

import numpy as np
import pytest

from prefstream.events import ChatTurn, Feedback, RouteRequest
from tests.workers.conftest import ingest_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUERY = "How do I sort a list of tuples by the second element in Python?"


@pytest.fixture(scope="module")
def iso(module_settings, tmp_path_factory):
    import torch

    from graphstore import open_store
    from prefstream.encoder import TextEncoder
    from trainer.model import GMTRouter, GMTRouterConfig
    from trainer.registry import ModelRegistry
    from trainer.simulate import SimConfig, Simulator
    from workers.engine import RouteEngine
    from workers.models import ModelSource

    torch.set_num_threads(1)
    model_dir = tmp_path_factory.mktemp("iso-models")
    torch.manual_seed(0)
    ModelRegistry(model_dir).publish(GMTRouter(GMTRouterConfig()), promote=True)
    sim = Simulator(SimConfig(seed=5, n_users=6, n_new_users=0, turns_min=10, turns_max=30))
    events = sim.events()
    store = open_store(module_settings)
    store.ensure_schema()
    encoder = TextEncoder(module_settings.encoder)
    ingest_events(store, encoder, events)
    users = sorted({e.user_id for e in events if isinstance(e, ChatTurn)})
    llms = sorted(store.llm_catalog())
    models = ModelSource(model_dir)
    assert models.scorer is not None
    # a deadline far beyond any batch here: these tests are about scores, not shedding on a loaded machine
    engine = RouteEngine(store, encoder, models, history_turns=module_settings.history_turns, record=False,
                         deadline_ms=600_000)
    yield {"engine": engine, "store": store, "encoder": encoder, "users": users, "llms": llms, "events": events,
           "models": models}
    store.clear()
    store.close()


def _req(user: str, rid: str, query: str = QUERY) -> RouteRequest:
    return RouteRequest(request_id=rid, user_id=user, query=query)


def _scores(decision) -> np.ndarray:
    assert decision.error is None and not decision.fallback, decision
    return np.array([decision.scores[k] for k in sorted(decision.scores)], dtype=np.float64)


def test_users_have_different_histories(iso):
    sgs = iso["store"].user_subgraphs(iso["users"][:3], 10)
    assert all(len(sg) > 0 for sg in sgs)
    assert len({tuple(sg.turn_ids) for sg in sgs}) == 3


def test_score_alone_equals_score_in_a_mixed_micro_batch(iso):
    engine, users = iso["engine"], iso["users"]
    a, others = users[0], users[1:]
    alone = engine.decide([_req(a, "alone")])[0]
    # A in the middle of a batch of users with other histories, a brand-new user and other queries
    batch = [_req(u, f"o{i}", query=f"other question {i}: write a haiku about graphs") for i, u in enumerate(others)]
    batch.insert(2, _req(a, "mixed"))
    batch.append(_req("brand-new-user", "new", query="what is 2 + 2?"))
    mixed = {d.request_id: d for d in engine.decide(batch)}["mixed"]
    assert mixed.turn_ids == alone.turn_ids
    diff = np.abs(_scores(mixed) - _scores(alone)).max()
    # batching may reorder float sums; anything beyond rounding is another user's history leaking in
    assert diff <= 1e-5, f"A's scores changed by {diff} when batched with other users: {alone.scores} vs {mixed.scores}"
    assert mixed.chosen_llm_id == alone.chosen_llm_id
    # ...and the comparison is sensitive: the same query for other users (other histories) scores differently
    other = engine.decide([_req(u, f"cmp{i}") for i, u in enumerate(others)] + [_req("brand-new-user", "cmpn")])
    assert max(np.abs(_scores(d) - _scores(alone)).max() for d in other) > 1e-4


def test_adding_history_to_b_does_not_change_a(iso):
    engine, store, encoder, users, llms = iso["engine"], iso["store"], iso["encoder"], iso["users"], iso["llms"]
    a, b = users[0], users[1]
    before_alone = _scores(engine.decide([_req(a, "a0")])[0])
    before_batched = _scores({d.request_id: d for d in engine.decide([_req(b, "b0"), _req(a, "a0b")])}["a0b"])
    extra = []
    for i in range(40):  # a burst of strongly one-sided history for B: every answer by one LLM, all loved
        t = ChatTurn(event_id=f"iso-b-{i}", user_id=b, conversation_id="iso-b", turn_index=i,
                     timestamp=9_000_000_000_000 + i, query=QUERY if i % 2 else f"B question {i}",
                     llm_id=llms[-1], response=f"B answer {i}")
        extra += [t, Feedback(event_id=f"iso-bf-{i}", user_id=b, turn_id=t.event_id, timestamp=t.timestamp + 1,
                              signal={"kind": "thumbs", "up": True})]
    ingest_events(store, encoder, extra)
    sg_b = store.user_subgraph(b, 10)
    assert all(tid.startswith("iso-b-") for tid in sg_b.turn_ids)  # B's history did change
    after_alone = _scores(engine.decide([_req(a, "a1")])[0])
    after_batched = _scores({d.request_id: d for d in engine.decide([_req(b, "b1"), _req(a, "a1b")])}["a1b"])
    assert np.abs(after_alone - before_alone).max() <= 1e-6
    assert np.abs(after_batched - before_batched).max() <= 1e-5, (before_batched, after_batched)


def test_same_query_scored_identically_for_identical_histories(iso):
    """Two requests of the same user in one batch (same history, same query) score the same."""
    engine, a = iso["engine"], iso["users"][0]
    d1, d2 = engine.decide([_req(a, "x1"), _req(iso["users"][2], "x2"), _req(a, "x3")])[::2]
    assert np.abs(_scores(d1) - _scores(d2)).max() <= 1e-5


def test_encoder_cache_is_keyed_by_text_only(iso):
    enc = iso["encoder"]
    text = "a query two users both ask"
    v1 = enc.encode([text])[0].copy()
    n = len(enc._cache)
    v2 = enc.encode([text, text])  # "another user" asking the same text: a cache hit, same vector
    assert len(enc._cache) == n
    assert np.array_equal(v2[0], v1) and np.array_equal(v2[1], v1)
    assert enc._key(text) in enc._cache
    # the key is a function of the text alone: nothing per-user can be mixed into it
    import inspect

    assert list(inspect.signature(enc._key).parameters) == ["text"]
    assert list(inspect.signature(enc.encode).parameters)[:1] == ["texts"]


def _keys_of_state(obj) -> set[str]:
    keys: set[str] = set()
    for v in vars(obj).values():
        if isinstance(v, dict):
            keys |= {str(k) for k in v}
        elif isinstance(v, (set, frozenset)):
            keys |= {str(k) for k in v}
    return keys


def test_engine_and_scorer_keep_no_per_user_state(iso):
    engine, users = iso["engine"], iso["users"]
    engine.decide([_req(u, f"s{i}") for i, u in enumerate(users)])
    scorer = iso["models"].scorer
    for obj in (engine, scorer, iso["store"], iso["encoder"]):
        leaked = {k for k in _keys_of_state(obj) for u in users if u in k}
        assert not leaked, (type(obj).__name__, sorted(leaked)[:5])
    # what the engine keeps across requests is per LLM (catalog, fallback prior), never per user
    assert set(engine._prior) <= set(iso["llms"]) and set(engine._catalog) == set(iso["llms"])
    assert set(scorer.llm_emb) <= set(iso["llms"])
