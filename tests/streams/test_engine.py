"""RouteEngine's decisions and fallbacks, on in-memory parts (pure unit tests; integration tests use real ones)."""

from __future__ import annotations

import numpy as np
import pytest

from fake_encoder import FakeEncoder
from graphstore.schema import LLMInfo, UserSubgraph, query_key
from prefstream.events import RouteRequest
from workers.engine import RouteEngine

D = 4


def llm(i: int, price: float) -> LLMInfo:
    return LLMInfo(f"m{i}", f"model {i}", price, price, np.eye(D, dtype=np.float32)[i])


class Store:
    def __init__(self):
        self.catalog = {m.llm_id: m for m in (llm(0, 1.0), llm(1, 5.0), llm(2, 0.5))}
        self.down = False
        self.recorded = []
        self.queries = {}
        self.rated = []  # (query key, user, conversation, turn index, llm, rating) rows of query_ratings
        self.crowd_reads = 0

    def llm_catalog(self):
        if self.down:
            raise ConnectionError("graph down")
        return dict(self.catalog)

    def user_subgraphs(self, user_ids, k):
        if self.down:
            raise ConnectionError("graph down")
        return [UserSubgraph(user_id=u, turn_ids=[f"{u}-t1"], conversation_ids=["c"], llm_ids=["m0"],
                             query_keys=["q"], turn_index=np.zeros(1, np.int64), timestamps=np.ones(1, np.int64),
                             query_emb=np.ones((1, D), np.float32), rating=np.ones(1, np.float32),
                             prev=-np.ones(1, np.int64)) for u in user_ids]

    def user_win_counts(self, user_ids):
        if self.down:
            raise ConnectionError("graph down")
        return [{"m1": (9.0, 10.0), "m0": (1.0, 10.0)} for _ in user_ids]  # the whole past: m1 beat m0 9 of 10

    def query_ratings(self, keys):
        if self.down:
            raise ConnectionError("graph down")
        self.crowd_reads += 1
        return [r for r in self.rated if r[0] in keys]

    def record_decisions(self, items):
        self.recorded += items

    def stored_query_embeddings(self, texts):
        if self.down:
            raise ConnectionError("graph down")
        return [self.queries.get(t) for t in texts]

    def upsert_queries(self, items):
        if self.down:
            raise ConnectionError("graph down")
        self.queries.update(items)


class Scorer:
    version = "v0007"

    def __init__(self):
        self.fail = False
        self.seen = []

    def decide_batch(self, items, explain=True):
        if self.fail:
            raise RuntimeError("boom")
        self.seen += items
        # prefer the LLM whose one-hot matches the number of history turns: deterministic and history-dependent
        scores = [np.array([float(c.embedding[len(sg)]) + 0.1 * j for j, c in enumerate(cands)])
                  for sg, _, cands, *_ in items]
        return scores, [{"personal": [0.5] * len(s)} for s in scores]


class Models:
    def __init__(self, scorer):
        self.scorer = scorer


def req(i: int = 0, **kw) -> RouteRequest:
    return RouteRequest(request_id=f"r{i}", user_id=kw.pop("user_id", f"u{i}"), query="q", **kw)


@pytest.fixture
def parts():
    store, scorer = Store(), Scorer()
    return store, scorer, RouteEngine(store, FakeEncoder(D), Models(scorer), history_turns=5)


def test_decision_names_scores_version_and_turns(parts):
    store, scorer, engine = parts
    [d] = engine.decide([req(0)])
    assert d.error is None and not d.fallback
    assert d.model_version == "v0007" and d.scorer == "model v0007"
    assert d.explain == {"personal": {"m0": 0.5, "m1": 0.5, "m2": 0.5}}  # per candidate, keyed by LLM id
    assert set(d.scores) == {"m0", "m1", "m2"}
    assert d.chosen_llm_id == max(d.scores, key=d.scores.get) == "m1"
    assert d.turn_ids == ["u0-t1"]
    engine.record_decisions([d])
    assert store.recorded == [d]


def test_candidates_and_budget_restrict_choice(parts):
    _, _, engine = parts
    a, b = engine.decide([req(0, candidates=["m0", "m2"]), req(1, budget=1.0)])
    assert set(a.scores) == {"m0", "m2"}
    assert set(b.scores) == {"m0", "m2"}  # m1 costs 5.0


def test_unknown_candidate_and_impossible_budget_are_errors(parts):
    _, _, engine = parts
    a, b, c = engine.decide([req(0, candidates=["m0", "nope"]), req(1, budget=0.1), req(2)])
    assert a.chosen_llm_id is None and "unknown llm ids ['nope']" in a.error
    assert b.chosen_llm_id is None and "budget" in b.error
    assert c.error is None and c.chosen_llm_id  # the good request in the same batch is unaffected


def test_graph_down_scores_without_history_and_flags_fallback(parts):
    store, scorer, engine = parts
    engine.decide([req(0)])  # caches the catalog
    store.down = True
    engine.catalog_ttl_s = 0
    [d] = engine.decide([req(1)])
    assert d.fallback and d.error is None
    assert d.turn_ids == [] and len(scorer.seen[-1][0]) == 0
    assert d.chosen_llm_id == "m0"  # embedding[0] is hot for m0 when there is no history


def test_graph_down_before_any_catalog_read_says_so(parts):
    store, _, engine = parts
    store.down = True  # e.g. a router restarted while the graph server is down: nothing cached to fall back on
    [d] = engine.decide([req(0)])
    assert d.chosen_llm_id is None
    assert "catalog could not be read" in d.error and "graph down" in d.error
    store.down = False
    engine.catalog_ttl_s = 0
    [d] = engine.decide([req(1)])
    assert d.error is None and d.chosen_llm_id


def test_scorer_down_answers_from_prior(parts):
    _, scorer, engine = parts
    for i in range(5):
        engine.decide([req(i)])
    scorer.fail = True
    [d] = engine.decide([req(9)])
    assert d.fallback and d.model_version is None
    assert d.chosen_llm_id == "m1"  # the LLM the model has been preferring


def test_no_model_yet_still_answers(parts):
    _, _, engine = parts
    engine.models = Models(None)
    [d] = engine.decide([req(0)])
    assert d.fallback and d.chosen_llm_id is not None and d.error is None


def test_new_request_texts_are_stored_once_and_stored_ones_not_encoded(parts):
    store, _, engine = parts
    enc = engine.encoder
    store.queries["known"] = np.full(D, 0.5, np.float32)  # e.g. ingested with an earlier turn
    engine.decide([RouteRequest(request_id="a", user_id="u", query="known"),
                   RouteRequest(request_id="b", user_id="u", query="new")])
    assert enc.embedded == ["new"]  # the graph's vector is used, only the unknown text runs the encoder
    assert "new" not in store.queries  # written with the audit record, off the decision path
    engine.record_decisions(engine.decide([RouteRequest(request_id="c", user_id="u", query="other")]))
    assert set(store.queries) == {"known", "new", "other"}
    store.down = True
    engine.decide([RouteRequest(request_id="d", user_id="u", query="while down")])  # lookup fails: still encoded
    assert enc.embedded[-1] == "while down"
    engine.record_decisions([])
    store.down = False
    engine.record_decisions(engine.decide([RouteRequest(request_id="e", user_id="u", query="new")]))
    assert "while down" not in store.queries  # unknown whether the graph has it: the ingest will embed it
    enc.fail = True
    [d] = engine.decide([RouteRequest(request_id="f", user_id="u", query="never encoded")])
    assert d.fallback
    engine.record_decisions([d])
    assert "never encoded" not in store.queries  # no vector: nothing to store


def test_a_request_past_its_deadline_is_shed_at_once(parts):
    from prefstream.events import now_ms

    store, scorer, engine = parts
    late = req(0, timestamp=now_ms() - 5_000)  # waited 5 s in the queue; the default deadline is 1 s
    own = req(1, timestamp=now_ms() - 5_000, deadline_ms=60_000)  # a deadline of its own: still in time
    fresh = req(2)
    a, b, c = engine.decide([late, own, fresh])
    assert a.shed and a.fallback and a.scorer == "prior" and a.chosen_llm_id in a.scores and not a.turn_ids
    assert not b.shed and not c.shed and b.scorer == c.scorer == "model v0007"
    assert [r[0].user_id for r in scorer.seen] == ["u1", "u2"]  # the shed request never reached the model
    bad = engine.decide([req(3, timestamp=now_ms() - 5_000, candidates=["nope"])])[0]
    assert bad.shed and bad.error  # still exactly one reply, with the reason


def test_one_slow_batch_does_not_make_every_later_request_late(parts):
    from prefstream.events import now_ms

    store, scorer, engine = parts
    engine.per_request_ms = 30_000.0  # the first batch loaded the model: far longer than any deadline
    [fresh] = engine.decide([req(0)])
    assert not fresh.shed and fresh.scorer == "model v0007"  # counted at most half its deadline
    engine.per_request_ms = 30_000.0
    [late] = engine.decide([req(1, timestamp=now_ms() - 5_000)])
    assert late.shed and engine.per_request_ms == 15_000.0  # a batch of only shed requests halves the estimate


def test_a_request_is_shed_when_its_whole_batch_would_end_past_its_deadline(parts):
    from prefstream.events import now_ms

    store, scorer, engine = parts
    engine.per_request_ms = 20.0  # 10 requests: 200 ms + the reply's trip
    batch = [req(i, timestamp=now_ms() - 700) for i in range(9)] + [req(9, timestamp=now_ms() - 900)]
    out = engine.decide(batch)
    assert [d.shed for d in out] == [False] * 9 + [True]  # 300 ms left is enough, 100 ms is not


def test_a_router_started_while_the_graph_is_down_answers_from_the_cached_catalog(tmp_path):
    from workers.catalog import CatalogCache

    cache = CatalogCache(tmp_path / "catalog.json")
    store, scorer = Store(), Scorer()
    RouteEngine(store, FakeEncoder(D), Models(scorer), catalog_cache=cache).decide([req(0)])  # a good read: saved
    store.down = True
    fresh = RouteEngine(store, FakeEncoder(D), Models(scorer), catalog_cache=cache)  # restarted, graph still down
    [d] = fresh.decide([req(1)])
    assert d.error is None and d.fallback and set(d.scores) == {"m0", "m1", "m2"}
    topic = RouteEngine(store, FakeEncoder(D), Models(scorer), catalog_source=lambda: {"m2": llm(2, 0.5)})
    [d] = topic.decide([req(2)])  # no copy on disk: the catalog topic's LLMs
    assert d.error is None and d.chosen_llm_id == "m2"
    none = RouteEngine(store, FakeEncoder(D), Models(scorer))
    [d] = none.decide([req(3)])
    assert d.error and "could not be read" in d.error


def test_the_count_scorer_counts_the_whole_past_the_store_reads(parts):
    """The window holds one rated m0 answer; the whole past says m1. Counting answers from the whole past."""
    from trainer.count_scorer import CountScorer

    store, _, engine = parts
    engine.models = Models(CountScorer())
    d = engine.decide([req(0)])[0]
    assert d.scorer == "count" and d.chosen_llm_id == "m1" and not d.fallback
    assert d.explain["counted"] == "whole past" and d.explain["games"] == {"m0": 10.0, "m1": 10.0, "m2": 0.0}
    store.user_win_counts = None  # a store that cannot count: the history's turns are counted instead
    d = engine.decide([req(1)])[0]
    assert d.scorer == "count" and d.explain["counted"] == "last 1 turns" and d.chosen_llm_id != "m1"


def test_under_overload_the_newest_requests_are_decided_and_the_older_shed_at_once(parts):
    """More live requests than fit in DECIDE_BUDGET of the deadline: the newest that fit are decided, the older are
    shed now (served requests stay fresh instead of all waiting about a deadline), still one reply each, in order."""
    from prefstream.events import now_ms

    store, scorer, engine = parts
    engine.per_request_ms = 62.5  # 4 requests fit in a quarter (DECIDE_BUDGET) of the 1 s deadline
    batch = [req(i, timestamp=now_ms() - 10 * (10 - i)) for i in range(10)]  # all in time; req 9 the newest
    out = engine.decide(batch)
    assert [d.request_id for d in out] == [r.request_id for r in batch]
    assert [d.shed for d in out] == [True] * 6 + [False] * 4
    assert all(d.scorer == "prior" for d in out[:6]) and all(d.scorer == "model v0007" for d in out[6:])
    engine.per_request_ms = 62.5
    assert not any(d.shed for d in engine.decide(batch[:4]))  # what fits is never shed


def test_shed_replies_are_handed_out_before_the_rest_of_the_batch_is_decided(parts):
    """With ``early`` (what the route loop passes), the shed replies leave before the model runs for the others, and
    only the others are returned: each request still gets exactly one reply."""
    from prefstream.events import now_ms

    store, scorer, engine = parts
    engine.per_request_ms = 62.5  # 4 fit
    batch = [req(i, timestamp=now_ms() - 10 * (10 - i)) for i in range(10)]
    calls_at_early = []
    early: list = []

    def take(ds):
        calls_at_early.append(len(scorer.seen))
        early.extend(ds)

    calls_before = len(scorer.seen)
    out = engine.decide(batch, early=take)
    assert calls_at_early == [calls_before]  # handed out before the scorer ran
    assert [d.request_id for d in early] == [r.request_id for r in batch[:6]] and all(d.shed for d in early)
    assert [d.request_id for d in out] == [r.request_id for r in batch[6:]] and not any(d.shed for d in out)
    engine.per_request_ms = 62.5
    early.clear()
    assert len(engine.decide(batch[:4], early=take)) == 4 and early == []  # nothing shed: early is not called


def test_a_standing_queue_of_stale_requests_shrinks_what_a_call_decides_until_it_clears(parts):
    """Queue-delay control: more requests than fit, the oldest waited past QUEUE_TARGET of its deadline -> the
    next calls decide a smaller share (down to MIN_DECIDE_SHARE); fresh calls let it grow back to DECIDE_BUDGET.
    Old requests that all fit are no queue: the share stays."""
    from prometheus_client import REGISTRY

    from prefstream.events import now_ms
    from workers.engine import DECIDE_BUDGET, MIN_DECIDE_SHARE

    store, scorer, engine = parts
    for _ in range(6):
        engine.per_request_ms = 10.0  # 25 fit in a quarter of 1 s
        engine.decide([req(i, timestamp=now_ms() - 700 + i) for i in range(40)])
    assert engine.decide_share == MIN_DECIDE_SHARE
    assert REGISTRY.get_sample_value("prefstream_route_decide_share") == MIN_DECIDE_SHARE  # operators see it
    engine.per_request_ms = 10.0
    out = engine.decide([req(i, timestamp=now_ms() - 700 + i) for i in range(40)])
    assert sum(not d.shed for d in out) == int(MIN_DECIDE_SHARE * 1000 / 10.0)  # 3 decided, the rest shed
    for _ in range(40):
        engine.per_request_ms = 10.0
        engine.decide([req(0)])
    assert engine.decide_share == DECIDE_BUDGET
    engine.per_request_ms = 10.0
    engine.decide([req(i, timestamp=now_ms() - 900) for i in range(5)])  # stale but all fit: no queue
    assert engine.decide_share == DECIDE_BUDGET
    off = RouteEngine(store, FakeEncoder(D), Models(scorer), history_turns=5, queue_target=0.0)  # control off
    for _ in range(6):
        off.per_request_ms = 10.0
        off.decide([req(i, timestamp=now_ms() - 700 + i) for i in range(40)])
    assert off.decide_share == DECIDE_BUDGET


def test_what_fits_follows_the_requests_own_deadlines_not_the_default(parts):
    """A batch whose requests ask for long deadlines is not cut to what fits in the default deadline's budget
    (bench/online.py routes hundreds at once with a 120 s deadline); a tight request in the batch tightens it."""
    from prefstream.events import now_ms

    store, scorer, engine = parts
    engine.per_request_ms = 62.5  # 4 fit in a quarter of the default 1 s; 480 in a quarter of 120 s
    batch = [req(i, timestamp=now_ms() - 10 * (300 - i), deadline_ms=120_000) for i in range(300)]
    out = engine.decide(batch)
    assert not any(d.shed for d in out) and all(d.scorer == "model v0007" for d in out)
    engine.per_request_ms = 62.5
    mixed = batch[:9] + [req(9, timestamp=now_ms(), deadline_ms=1_000)]
    assert [d.shed for d in engine.decide(mixed)] == [True] * 6 + [False] * 4


def test_crowd_rows_of_a_query_are_reused_for_a_moment_then_read_again(parts, monkeypatch):
    """A popular query is read once per CROWD_TTL_S, not per batch; after that, other users' new ratings count."""
    import workers.engine as engine_mod

    store, scorer, engine = parts
    scorer.uses_crowd = True
    store.rated = [(query_key("q"), "u9", "c", 0, "m1", 1.0), (query_key("q"), "u9", "c", 0, "m0", 0.0)]
    engine.decide([req(0)])
    store.rated += [(query_key("q"), "u8", "c", 0, "m2", 1.0), (query_key("q"), "u8", "c", 0, "m0", 0.0)]
    engine.decide([req(1)])
    assert store.crowd_reads == 1 and scorer.seen[-1][4][2] == 0.0  # reused: u8's rating of m2 not seen yet
    monkeypatch.setattr(engine_mod, "CROWD_TTL_S", 0.0)
    engine.decide([req(2)])
    assert store.crowd_reads == 2 and scorer.seen[-1][4][2] > 0.0  # read again: it counts now


def test_a_crowd_scorer_gets_other_users_ratings_of_the_same_query(parts):
    """Crowd evidence is read only for a model that uses it, is centred per comparison, and leaves out the
    requesting user's own ratings."""
    store, scorer, engine = parts
    store.rated = [(query_key("q"), "u9", "c", 0, "m1", 1.0), (query_key("q"), "u9", "c", 0, "m0", 0.0),
                   (query_key("q"), "u0", "c", 0, "m2", 1.0), (query_key("q"), "u0", "c", 0, "m0", 0.0),
                   (query_key("other"), "u9", "d", 0, "m2", 1.0), (query_key("other"), "u9", "d", 0, "m0", 0.0)]
    engine.decide([req(0)])
    assert store.crowd_reads == 0 and scorer.seen[-1][4] is None  # a model without the crowd term: no read
    scorer.uses_crowd = True
    engine.decide([req(0), req(1)])
    assert store.crowd_reads == 1  # one read for the batch
    mine, theirs = scorer.seen[-2][4], scorer.seen[-1][4]  # candidates m0, m1, m2
    np.testing.assert_allclose(mine, [-0.5 / 2, 0.5 / 2, 0.0])  # u0 asks: only u9's comparison counts
    np.testing.assert_allclose(theirs, [-1.0 / 3, 0.5 / 2, 0.5 / 2])  # u1 asks: both comparisons
    store.down = True
    engine.decide([req(2)])
    assert scorer.seen[-1][4] is None  # graph down: scored without it, as without history
