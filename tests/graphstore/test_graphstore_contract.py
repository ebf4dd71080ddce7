"""The GraphStore contract, run on every reachable backend: ingest, idempotence, order tolerance, reads."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from graphstore.schema import KEYS, Label, Rel, query_key
from graphstore_events import decision, emb, llm, pairwise, raw_write, score, thumbs, turn, with_emb

NASTY = [
    'He said "hi" and \'bye\'',
    "back\\slash \\\" and \\n literal, real\nnewline\ttab",
    "}) MATCH (n) DETACH DELETE n //",
    "$rows ${x} {{x}} %s %(x)s {0}",
    "日本語のテキスト — émojis 🚀👍🏽, RTL עברית, combining é",
    "CALL db.labels() YIELD label RETURN label; DROP DATABASE neo4j",
    "` backtick ` and ´ accents",
]


def conversation(user="u1", conv="c1", n=3, llms=("m1", "m2"), t0=1000, step=100):
    """n turns, each answered by every LLM in ``llms`` (one Turn node per answer)."""
    return [turn(f"{user}-{conv}-{i}-{m}", user, conv, i, t0 + i * step + j, m)
            for i in range(n) for j, m in enumerate(llms)]


def snapshot(store, users=("u1",)):
    """Everything the public API can see, as comparable plain values."""
    counts = {label: store.count(label) for label in KEYS}
    edges = {rel: store.count_edges(rel) for rel in vars(Rel).values() if isinstance(rel, str) and rel.isupper()}
    subs = []
    for u in users:
        s = store.user_subgraph(u, 100)
        subs.append((s.turn_ids, s.prev.tolist(), [None if math.isnan(r) else r for r in s.rating.tolist()],
                     s.query_emb.tobytes(), s.timestamps.tolist()))
    hist = [store.user_history(u, 100) for u in users]
    cat = {k: (v.description, v.price_in, v.price_out, v.embedding.tobytes()) for k, v in store.llm_catalog().items()}
    return counts, edges, subs, hist, cat


def test_schema_is_idempotent_and_store_starts_empty(store):
    store.ensure_schema()
    store.ensure_schema()
    assert all(store.count(label) == 0 for label in KEYS)
    with pytest.raises(ValueError, match="unknown label"):
        store.count("Nope")


def test_the_first_writer_claims_the_graphs_embedding_space_and_a_mismatch_is_refused(store_settings):
    """A graph's query vectors are of one encoder's space: the first ingest or router to claim it sets it, the
    same space is accepted by every later one, another is refused with a clear error (also after a restart),
    and ingest and router builds refuse to start on such a graph."""
    from graphstore import open_store
    from graphstore.base import EmbeddingSpaceMismatch
    from prefstream.encoder import TextEncoder
    from streams.ingest import build_ingestor

    with open_store(store_settings) as s:
        s.clear()
        assert s.claim_embedding_space("enc-a:static") == "enc-a:static"
        assert s.claim_embedding_space("enc-a:static") == "enc-a:static" and s.count(Label.META) == 1
        with pytest.raises(EmbeddingSpaceMismatch, match="enc-a:static vectors but this process encodes enc-b"):
            s.claim_embedding_space("enc-b:onnx")
    with open_store(store_settings) as s:  # what was claimed is in the graph, not in a process
        with pytest.raises(EmbeddingSpaceMismatch):
            s.claim_embedding_space("enc-b:onnx")
        with pytest.raises(EmbeddingSpaceMismatch, match=TextEncoder.from_settings(store_settings).space):
            build_ingestor(store_settings)
        s.clear()
    build_ingestor(store_settings)  # an empty graph: the deployment's encoder claims it
    with open_store(store_settings) as s:
        assert s.claim_embedding_space(TextEncoder.from_settings(store_settings).space)
        s.clear()


def test_a_graph_with_vectors_but_no_recorded_space_is_claimed_only_by_its_own_encoder(store):
    """Vectors stored before spaces were recorded: a claim with the process's encoder re-encodes stored texts and
    refuses another encoder's vectors; the right encoder claims the graph, and later claims compare the record."""
    from graphstore.base import EmbeddingSpaceMismatch

    store.upsert_queries([(q, emb(q)) for q in NASTY[:3]])  # written by the `emb` encoder, no claim

    def other(texts):
        return np.stack([emb("another encoder: " + t) for t in texts])

    with pytest.raises(EmbeddingSpaceMismatch, match="not this process's enc-b:static vectors"):
        store.claim_embedding_space("enc-b:static", other)
    assert store.count(Label.META) == 0  # refused before anything was recorded
    assert store.claim_embedding_space("enc-a:static", lambda texts: np.stack([emb(t) for t in texts]))
    with pytest.raises(EmbeddingSpaceMismatch, match="are enc-a:static vectors"):
        store.claim_embedding_space("enc-b:static", other)


def test_reads_work_before_anything_was_written(store_settings):
    from graphstore import open_store

    fresh = store_settings.model_copy(update={"graph_name": store_settings.graph_name + "-never-written"})
    if store_settings.graph_backend == "neo4j":
        fresh = store_settings  # one database; the store fixture is not used here, so clear it ourselves
    with open_store(fresh, ensure_schema=False) as s:
        if store_settings.graph_backend == "neo4j":
            s.clear()
        assert len(s.user_subgraph("u1", 5)) == 0 and s.user_subgraphs(["u1", "u2"], 5)[1].user_id == "u2"
        assert s.user_history("u1", 5) == [] and s.decision("r") is None and s.llm_catalog() == {}
        assert s.count(Label.TURN) == 0 and s.count_edges(Rel.BY) == 0
        assert s.sample_training(3, 5, seed=0) == []


def test_upsert_turns_creates_every_node_and_edge(store):
    turns = conversation(n=3) + [turn("other", "u2", "c9", 0, 900, "m3", query="question c1 0")]
    store.upsert_turns(with_emb(*turns))
    assert store.count(Label.TURN) == 7
    assert store.count(Label.RESPONSE) == 7
    assert store.count(Label.USER) == 2
    assert store.count(Label.LLM) == 3
    assert store.count(Label.QUERY) == 3  # one node per distinct text, shared across users and LLMs
    assert store.count_edges(Rel.ASKED_IN) == 7
    assert store.count_edges(Rel.ANSWERED) == 7
    assert store.count_edges(Rel.ANSWER_OF) == 7
    assert store.count_edges(Rel.BY) == 7
    # turn i links to each answer of turn i-1 of the same conversation: 2 turns x 2 answers x 2 previous
    assert store.count_edges(Rel.FOLLOWS) == 8


def test_replaying_everything_in_any_order_changes_nothing(store):
    turns = conversation(n=4)
    llms = [llm("m1"), llm("m2")]
    fbs = [thumbs("f1", "u1-c1-1-m1", True, 5000), score("f2", "u1-c1-2-m2", 7.0, 5001),
           pairwise("f3", "u1-c1-3-m1", "u1-c1-3-m2", 5002)]
    decs = [decision("r1", turns=["u1-c1-0-m1", "u1-c1-1-m1"]), decision("r2", user=None, chosen=None,
                                                                          error="bad request")]
    store.upsert_llms(llms)
    store.upsert_turns(with_emb(*turns, response_emb=True))
    store.upsert_feedback(fbs)
    store.record_decisions(decs)
    before = snapshot(store)
    rnd = random.Random(7)
    for _ in range(2):
        t2 = list(turns)
        rnd.shuffle(t2)
        f2 = list(fbs)
        rnd.shuffle(f2)
        store.upsert_feedback(f2)
        store.upsert_turns(with_emb(*t2, response_emb=True))
        store.record_decisions(decs[::-1])
        store.upsert_llms(llms[::-1])
        store.upsert_turns(with_emb(*(t2 + t2)))  # duplicates inside one batch too
    assert snapshot(store) == before
    assert store.count(Label.DECISION) == 2


def _raw_write(store, falkordb: str, neo4j: str) -> None:
    """A write outside graphstore.cypher (the store refuses those): only to fake a graph an older version stored."""
    if hasattr(store, "graph"):
        store.graph.query(falkordb)
    else:
        store.driver.execute_query(neo4j, database_=store.database)


def test_turns_stored_before_positions_existed_are_still_linked(store):
    # A graph from before the `position` property (and its index): ensure_schema creates the index and fills
    # the property in, so a later turn of the same conversation finds the old turns (FOLLOWS) both ways
    store.upsert_turns(with_emb(*conversation(n=1), turn("u1-c1-2-m1", "u1", "c1", 2, 1300, "m1")))
    strip = "MATCH (t:Turn) SET t.position = null"
    _raw_write(store, strip, strip)
    _raw_write(store, "DROP INDEX ON :Turn(position)", "DROP INDEX turn_position IF EXISTS")
    store.ensure_schema()
    store.upsert_turns(with_emb(turn("u1-c1-1-m1", "u1", "c1", 1, 1200, "m1")))
    assert store.count_edges(Rel.FOLLOWS) == 3  # 1 -> both answers of 0, 2 -> 1
    assert store.user_subgraph("u1", 10).prev.tolist() == [-1, -1, 0, 2]


def test_order_tolerance_turns_reversed_and_feedback_first(store):
    turns = conversation(n=4)
    fbs = [thumbs("f1", "u1-c1-1-m1", True, 5000), pairwise("f3", "u1-c1-3-m1", "u1-c1-3-m2", 5002)]
    store.upsert_turns(with_emb(*turns))
    store.upsert_feedback(fbs)
    in_order = snapshot(store)[1:4]

    store.clear()
    store.upsert_feedback(fbs[::-1])  # feedback before any turn: kept, applied when the turns arrive
    assert store.count(Label.FEEDBACK) == 2
    for t in reversed(turns):  # one at a time, newest first
        store.upsert_turns(with_emb(t))
    assert snapshot(store)[1:4] == in_order
    assert store.count(Label.RESPONSE) == len(turns)


def test_feedback_rules_latest_wins_and_pairwise_rates_rejected(store):
    store.upsert_turns(with_emb(*conversation(n=2)))
    store.upsert_feedback([thumbs("late", "u1-c1-0-m1", False, 6000), thumbs("early", "u1-c1-0-m1", True, 5000)])
    store.upsert_feedback([score("s", "u1-c1-0-m2", 10.0, 5500)])
    store.upsert_feedback([pairwise("p", "u1-c1-1-m2", "u1-c1-1-m1", 5600, "m2", "m1")])
    store.upsert_feedback([thumbs("early", "u1-c1-0-m1", True, 5000)])  # an older replay does not win
    sub = store.user_subgraph("u1", 10)
    got = dict(zip(sub.turn_ids, sub.rating.tolist()))
    assert got == {"u1-c1-0-m1": 0.0, "u1-c1-0-m2": 1.0, "u1-c1-1-m1": 0.0, "u1-c1-1-m2": 1.0}
    store.upsert_feedback([pairwise("tie", "u1-c1-1-m2", "u1-c1-1-m1", 5700, "m2", "m1", tie=True)])
    sub = store.user_subgraph("u1", 10)
    assert sub.rating[-2:].tolist() == [0.5, 0.5]
    assert store.count(Label.FEEDBACK) == 5
    assert store.count_edges(Rel.RATES) == 7


@pytest.mark.parametrize("text", NASTY)
def test_texts_with_quotes_unicode_and_cypher_round_trip(store, text):
    t = turn("nasty", query=text, response=text + " (answer)")
    store.upsert_llms([llm("m1", description=text)])
    store.upsert_turns(with_emb(t))
    store.record_decisions([decision("req", turns=["nasty"], error=None, model_version=text)])
    hist = store.user_history("u1", 10)
    turns = [h for h in hist if h["kind"] == "turn"]
    assert turns[0]["query"] == text and turns[0]["response"] == text + " (answer)"
    assert store.llm_catalog()["m1"].description == text
    d = store.decision("req")
    assert d["model_version"] == text and d["turns"][0]["query"] == text
    assert store.user_subgraph("u1", 5).query_keys == [query_key(text)]
    assert store.count(Label.TURN) == 1 and store.count(Label.USER) == 1  # nothing was executed from the text


def test_llm_catalog_newer_registration_wins(store):
    store.upsert_turns(with_emb(turn("t", llm="seen-only")))
    store.upsert_llms([llm("m1", ts=10, description="new", price_in=3.0), llm("m2", ts=1)])
    store.upsert_llms([llm("m1", ts=5, description="old", price_in=1.0)])
    cat = store.llm_catalog()
    assert set(cat) == {"m1", "m2"}  # an LLM only seen in turns is not a registered candidate
    assert cat["m1"].description == "new" and cat["m1"].price_in == 3.0 and cat["m1"].price_out == 2.0
    np.testing.assert_array_equal(cat["m1"].embedding, emb("new"))
    assert cat["m1"].embedding.dtype == np.float32 and cat["m1"].embedding.shape == (384,)


def test_user_subgraph_contents_and_order(store):
    turns = conversation("u1", "c1", n=3) + conversation("u1", "c2", n=2, llms=("m3",), t0=1050)
    store.upsert_turns(with_emb(*reversed(turns)))
    store.upsert_feedback([thumbs("f", "u1-c1-2-m2", True, 9000)])
    sub = store.user_subgraph("u1", 100)
    expected = sorted(turns, key=lambda t: (t.timestamp, t.event_id))
    assert sub.turn_ids == [t.event_id for t in expected]
    assert sub.timestamps.tolist() == sorted(sub.timestamps.tolist())
    assert sub.conversation_ids == [t.conversation_id for t in expected]
    assert sub.llm_ids == [t.llm_id for t in expected]
    assert sub.query_keys == [query_key(t.query) for t in expected]
    assert sub.turn_index.tolist() == [t.turn_index for t in expected]
    assert sub.query_emb.shape == (8, 384) and sub.query_emb.dtype == np.float32
    np.testing.assert_array_equal(sub.query_emb, np.stack([emb(t.query) for t in expected]))
    rated = {tid: r for tid, r in zip(sub.turn_ids, sub.rating.tolist()) if not math.isnan(r)}
    assert rated == {"u1-c1-2-m2": 1.0}
    # prev: the same LLM's answer to the previous turn of the same conversation, else -1
    for i, p in enumerate(sub.prev.tolist()):
        if sub.turn_index[i] == 0:
            assert p == -1
        else:
            assert sub.conversation_ids[p] == sub.conversation_ids[i]
            assert sub.turn_index[p] == sub.turn_index[i] - 1 and sub.llm_ids[p] == sub.llm_ids[i]

    last3 = store.user_subgraph("u1", 3)
    assert last3.turn_ids == sub.turn_ids[-3:]
    assert last3.prev.tolist()[0] == -1 or last3.prev.tolist()[0] < 0  # its previous turn fell outside
    c2 = store.user_subgraph("u1", 10, conversation_id="c2")
    assert c2.turn_ids == ["u1-c2-0-m3", "u1-c2-1-m3"] and c2.prev.tolist() == [-1, 0]
    early = store.user_subgraph("u1", 10, before_ms=1101)
    assert early.turn_ids == ["u1-c1-0-m1", "u1-c1-0-m2", "u1-c2-0-m3", "u1-c1-1-m1"]


def test_unknown_user_gets_an_empty_subgraph(store):
    store.upsert_turns(with_emb(turn("t")))
    sub = store.user_subgraph("nobody", 10)
    assert len(sub) == 0 and sub.user_id == "nobody"
    assert sub.query_emb.shape[0] == 0 and sub.rating.shape == (0,) and sub.prev.shape == (0,)
    assert len(store.user_subgraph("u1", 0)) == 0


def test_batched_subgraphs_equal_single_reads_in_input_order(store):
    turns = []
    for u in range(10):  # more users than the batch size (7): several round trips
        turns += conversation(f"user{u}", "c", n=u % 4 + 1, t0=1000 + u)
    store.upsert_turns(with_emb(*turns))
    ids = [f"user{u}" for u in (9, 3, 0, 5, 3, 1, 2, 4, 6, 7, 8)] + ["ghost"]
    batch = store.user_subgraphs(ids, 3)
    assert [s.user_id for s in batch] == ids
    for s in batch:
        one = store.user_subgraph(s.user_id, 3)
        assert s.turn_ids == one.turn_ids and s.prev.tolist() == one.prev.tolist()
        np.testing.assert_array_equal(s.query_emb, one.query_emb)
    assert len(batch[-1]) == 0 and all(len(s) == min(3, 2 * (int(s.user_id[4:]) % 4 + 1)) for s in batch[:-1])


def test_decisions_are_linked_and_kept(store):
    store.upsert_turns(with_emb(*conversation(n=2)))
    store.record_decisions([decision("r1", turns=["u1-c1-0-m1", "u1-c1-1-m2", "not-stored"], fallback=True),
                            decision("r2", user=None, chosen=None, error="invalid request")])
    assert store.count(Label.DECISION) == 2
    assert store.count_edges(Rel.USED) == 2 and store.count_edges(Rel.FOR) == 1 and store.count_edges(Rel.CHOSE) == 1
    d = store.decision("r1")
    assert d["chosen_llm_id"] == "m1" and d["model_version"] == "v1" and d["fallback"] is True
    assert d["scores"] == {"m1": 0.7, "m2": 0.2} and d["latency_ms"] == 3.5 and d["ts"] == 5000
    assert [t["turn_id"] for t in d["turns"]] == ["u1-c1-0-m1", "u1-c1-1-m2", "not-stored"]
    assert d["turns"][0]["query"] == "question c1 0" and d["turns"][2] == {"turn_id": "not-stored", "missing": True}
    e = store.decision("r2")
    assert e["error"] == "invalid request" and e["chosen_llm_id"] is None and e["turns"] == []
    assert store.decision("nope") is None


def test_stored_query_embeddings_round_trip_and_first_write_wins(store):
    texts = NASTY[:3]
    assert store.stored_query_embeddings(texts) == [None, None, None]
    store.upsert_queries([(texts[0], emb(texts[0])), (texts[1], emb(texts[1]))])
    store.upsert_queries([(texts[0], emb("another vector"))])  # a Query node never changes once created
    store.upsert_turns(with_emb(turn("t1", query=texts[2])))
    got = store.stored_query_embeddings(texts + ["never seen"])
    for t, v in zip(texts, got):
        np.testing.assert_allclose(v, emb(t), atol=1e-6)
    assert got[3] is None
    assert store.count(Label.QUERY) == 3


def test_win_counts_cover_the_whole_past_beyond_any_window(store):
    """The count-based scorer's read: every rated comparison of the user, however old, pairs within a turn."""
    from trainer.baselines import visible_comparisons, win_counts

    turns = conversation("u1", "c", n=6, llms=("m1", "m2", "m3")) + conversation("u2", "c", n=2)
    store.upsert_turns(with_emb(*turns))
    early, late = {"m1": 9, "m2": 5, "m3": 5}, {"m1": 1, "m2": 9, "m3": 5}
    fb = [score(f"f{i}-{m}", f"u1-c-{i}-{m}", early[m] if i < 4 else late[m], 5000 + i)
          for i in range(6) for m in ("m1", "m2", "m3") if (i, m) != (5, "m3")]
    store.upsert_feedback(fb + [thumbs("g0", "u2-c-0-m2", True, 6000, user="u2")])
    got = store.user_win_counts(["u1", "ghost", "u2", "u1"])
    assert got[1] == {} and got[0] == got[3]
    # u1: turns 0-3 m1 beats both, m2 ties m3; turn 4 m2 > m3 > m1; turn 5 only m1 and m2 rated, m2 wins
    assert got[0] == {"m1": (8.0, 11.0), "m2": (2.0 + 2 + 1, 11.0), "m3": (2.0 + 1, 10.0)}
    assert got[2] == {}  # one rated answer alone is no comparison
    assert store.global_win_counts(10) == got[0]  # u2 has no comparison: the sum is u1's
    assert store.global_win_counts(1) in (got[0], {})  # only the most recently active user
    window = store.user_subgraph("u1", 6)  # the last 6 turns = 2 comparisons: counting them differs
    assert win_counts(visible_comparisons(window))[1]["m1"] < 11.0


def test_query_ratings_give_other_users_crowd_evidence(store):
    """The crowd read: every user's rated answers to one query text, newest first up to the limit; centred per
    comparison by trainer/crowd.py, the requesting user's own ratings left out."""
    from trainer.crowd import CrowdTable

    q = "what is the capital of France?"
    turns = [turn(f"{u}-{m}", u, f"c-{u}", 0, 1000 + i * 10 + j, m, query=q)
             for i, u in enumerate(("u1", "u2", "u3")) for j, m in enumerate(("m1", "m2"))]
    turns.append(turn("u4-m1", "u4", "c-u4", 0, 2000, "m1", query="another question"))
    store.upsert_turns(with_emb(*turns))
    rated = {"u1": {"m1": 9, "m2": 1}, "u2": {"m1": 8, "m2": 4}, "u3": {"m1": 2}}  # u3 rated one answer only
    store.upsert_feedback([score(f"f-{u}-{m}", f"{u}-{m}", v, 3000, user=u)
                           for u, r in rated.items() for m, v in r.items()] + [score("f4", "u4-m1", 10, 3000, "u4")])
    rows = store.query_ratings([query_key(q), query_key("never asked")])
    assert sorted((r[1], r[4]) for r in rows) == [("u1", "m1"), ("u1", "m2"), ("u2", "m1"), ("u2", "m2"),
                                                   ("u3", "m1")]
    assert all(r[0] == query_key(q) and r[2] == f"c-{r[1]}" and r[3] == 0 for r in rows)
    table = CrowdTable.from_rows(rows, prior=1.0)
    # u1's centred ratings: m1 +4/9, m2 -4/9; u2's: m1 +2/9, m2 -2/9; u3's single answer is no comparison
    np.testing.assert_allclose(table.evidence(query_key(q), ["m1", "m2", "m3"], "u3"),
                               [(4 / 9 + 2 / 9) / 3, -(4 / 9 + 2 / 9) / 3, 0.0], atol=1e-6)
    np.testing.assert_allclose(table.evidence(query_key(q), ["m1", "m2"], "u1"), [(2 / 9) / 2, -(2 / 9) / 2],
                               atol=1e-6)  # u1 asking: only u2 counts
    assert len(store.query_ratings([query_key(q)], limit=2)) == 2  # the newest two answers only


def test_win_counts_counted_in_the_database_match_graphstore_counts(store):
    """The database's count (cypher.USER_WIN_COUNTS) is graphstore.counts.per_llm over the same rated answers, with
    ties, unrated answers, lone answers, one LLM answering a turn twice, and several users in one read."""
    from graphstore.counts import per_llm

    rng = np.random.default_rng(3)
    turns, fbs, rated = [], [], {}
    for u in range(4):
        for i in range(25):
            llms = list(rng.choice(["m1", "m2", "m3", "m4"], size=int(rng.integers(1, 5)), replace=True))
            for j, m in enumerate(llms):
                tid = f"u{u}-{i}-{j}"
                turns.append(turn(tid, f"u{u}", f"c{u}-{i // 5}", i % 5, 1000 * i + j, str(m)))
                if rng.random() < 0.8:
                    value = float(rng.integers(1, 4))  # few values: many ties
                    fbs.append(score(f"f-{tid}", tid, value, 1000 * i + 500, user=f"u{u}"))
                    rated.setdefault(f"u{u}", []).append((f"c{u}-{i // 5}", i % 5, str(m), (value - 1) / 9))
    store.upsert_turns(with_emb(*turns))
    store.upsert_feedback(fbs)
    store.batch_size = 3  # two reads
    users = ["u0", "u1", "ghost", "u2", "u3"]
    got = store.user_win_counts(users)
    want = [per_llm(rated.get(u, [])) for u in users]
    assert got == want and any(w for w in want)
    assert any(w != int(w) for c in want for w, _ in c.values())  # ties counted half


def test_win_counts_are_kept_by_the_writes_in_any_order_and_replay(store):
    """The kept counts (cypher.RECOUNT_COMPARISONS) equal graphstore.counts.per_llm over the ratings in force,
    whatever the order turns and ratings arrive in: ratings before their turns, ratings replaced by later
    feedback, older feedback arriving last (it changes nothing), pairwise feedback rating two answers, replays of
    whole batches; and a graph whose counts were never kept gets them from ensure_schema."""
    from graphstore.counts import per_llm

    rng = np.random.default_rng(11)
    turns, fbs, where = [], [], {}
    for u in range(3):
        for i in range(30):
            llms = [str(m) for m in rng.choice(["m1", "m2", "m3", "m4"], size=int(rng.integers(1, 5)))]
            for j, m in enumerate(llms):
                tid = f"u{u}-{i}-{j}"
                turns.append(turn(tid, f"u{u}", f"c{u}-{i // 6}", i % 6, 1000 * i + j, m))
                where[tid] = (f"u{u}", f"c{u}-{i // 6}", i % 6, m)
                for n in range(int(rng.choice([0, 1, 1, 2, 3]))):  # several ratings: the latest holds
                    fbs.append(score(f"f-{tid}-{n}", tid, float(rng.integers(1, 4)), int(rng.integers(0, 90_000)),
                                     user=f"u{u}"))
            if len(llms) > 1 and llms[0] != llms[1] and rng.random() < 0.3:
                a, b = f"u{u}-{i}-0", f"u{u}-{i}-1"
                fbs.append(pairwise(f"p-{a}", a, b, int(rng.integers(0, 90_000)), llms[0], llms[1],
                                    tie=bool(rng.random() < 0.3), user=f"u{u}"))
    events = [("t", e) for e in turns] + [("f", e) for e in fbs]
    rng.shuffle(events)
    batches = [events[a:a + 17] for a in range(0, len(events), 17)]
    for n, batch in enumerate(batches + [batches[k] for k in rng.choice(len(batches), 5)]):  # then 5 replays
        store.upsert_turns(with_emb(*[e for kind, e in batch if kind == "t"]))
        store.upsert_feedback([e for kind, e in batch if kind == "f"])
    rating: dict[str, tuple] = {}
    for f in fbs:
        targets = [(f.turn_id, f.rating)]
        if f.signal.kind == "pairwise":
            targets.append((f.signal.rejected_turn_id, 1.0 - f.rating))
        for tid, value in targets:
            rating[tid] = max(rating.get(tid, (-1, "", 0.0)), (f.timestamp, f.event_id, float(value)))
    users = ["u0", "u1", "u2", "ghost"]
    want = [per_llm([(*where[t][1:], r[2]) for t, r in rating.items() if where[t][0] == u]) for u in users]
    assert store.user_win_counts(users) == want and all(want[:3])

    raw_write(store, "MATCH (:User)-[k:WIN_COUNT]->(:LLM) DELETE k")  # a graph from before the counts were kept
    raw_write(store, "MATCH (r:Response) REMOVE r.pair_wins, r.pair_games")
    raw_write(store, "MATCH (m:Meta) DELETE m")
    assert store.user_win_counts(users) == [{}] * 4
    store.ensure_schema()
    assert store.user_win_counts(users) == want
    assert store.recount_win_counts() == 0  # all counted: nothing left to recount


def test_a_stale_count_is_found_and_rebuilt_from_the_stored_ratings(store):
    """graphstore.count_check finds the users whose kept counts differ from their stored ratings, whether a
    rating's recount was lost (a stale share) or an edge drifted (right shares, wrong sum), writes nothing when
    only checking, and with repair rebuilds exactly those users to the count of their ratings."""
    import io
    import json

    from graphstore.count_check import check_win_counts
    from graphstore.counts import per_llm
    from graphstore.counts_cli import run

    turns, fbs, where = [], [], {}
    for u in range(3):
        for i in range(12):
            for j, m in enumerate(["m1", "m2", "m3"][: 2 + i % 2]):
                tid = f"u{u}-{i}-{j}"
                turns.append(turn(tid, f"u{u}", f"c{u}-{i // 4}", i % 4, 1000 * i + j, m))
                where[tid] = (f"u{u}", f"c{u}-{i // 4}", i % 4, m)
                fbs.append(score(f"f-{tid}", tid, float((u + i + 2 * j) % 4 + 1), 1000 * i + 500, user=f"u{u}"))
    store.upsert_turns(with_emb(*turns))
    store.upsert_feedback(fbs)
    users = ["u0", "u1", "u2"]
    clean = check_win_counts(store)
    assert clean.ok and clean.users == 3 and clean.answers == len(fbs) and not clean.off
    before = store.user_win_counts(users)

    # u0: the server kept a new rating of u0-0-0 (it had lost) and lost its recount; u1: an edge's sum drifted
    raw_write(store, "MATCH (r:Response {response_id: 'u0-0-0'}) SET r.rating = 2.0")
    raw_write(store, "MATCH (:User {user_id: 'u1'})-[k:WIN_COUNT]->(:LLM {llm_id: 'm1'}) SET k.wins = k.wins + 1")
    found = check_win_counts(store)
    assert not found.ok and [c.user_id for c in found.off] == ["u0", "u1"]
    u0, u1 = found.off
    assert u0.stale_shares >= 1 and u0.kept == before[0] and u0.kept != u0.counted
    w, g = before[1]["m1"]
    assert u1.stale_shares == 0 and u1.differing() == {"m1": ((w + 1, g), (w, g))}
    assert store.user_win_counts(users)[1:] == [{**before[1], "m1": (w + 1, g)}, before[2]]  # checking wrote nothing

    out = io.StringIO()
    assert run(store, None, False, as_json=True, out=out) == 1
    assert [c["user_id"] for c in json.loads(out.getvalue())["off"]] == ["u0", "u1"]
    fixed = check_win_counts(store, repair=True)
    assert fixed.ok and fixed.repaired == ["u0", "u1"] and not fixed.still_off
    stored = [(f.turn_id, f.rating if f.turn_id != "u0-0-0" else 2.0) for f in fbs]
    want = [per_llm([(*where[t][1:], r) for t, r in stored if where[t][0] == u]) for u in users]
    assert store.user_win_counts(users) == want and want[2] == before[2] and want[0] != before[0]
    assert check_win_counts(store, ["u1", "ghost"]).ok

    # a write between a rebuild's forgetting and its recount is counted once, by the write's own recount
    from graphstore import cypher

    store._write(cypher.CLEAR_WIN_COUNTS, {"uids": ["u2"]})
    store.upsert_feedback([score("f-late", "u2-0-0", 4.0, 90_000, user="u2")])
    assert store.recount_win_counts(["u2"]) == 11 and check_win_counts(store, ["u2"]).ok  # the 12th was the write's
    out = io.StringIO()
    assert run(store, ["u0"], False, as_json=False, out=out) == 0 and "checked 1 users" in out.getvalue()
