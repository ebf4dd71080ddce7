"""The FalkorDB fast paths (own parameter header and result parsing) and the query-embedding cache."""

from __future__ import annotations

import numpy as np
import pytest

from graphstore import codec
from graphstore.schema import query_key
from graphstore_events import emb, turn, with_emb

from test_graphstore_contract import NASTY


def test_params_header_is_byte_identical_to_the_falkordb_client():
    from falkordb.graph import Graph
    from falkordb.helpers import stringify_param_value

    from graphstore.falkor_backend import param_value, params_header

    values = [None, True, False, 0, -3, 2**62, 1.5, float("-0.0"), 1e-300, "", *NASTY, b"bytes",
              [], (), {}, [1, "a", None, [2.5, {"k": "v"}]], {"turn_id": "x", "n": None, "l": [1, 2], "m": {"a": 1}},
              [{"turn_id": f"t{i}", "ts": i, "rating": i / 3, "text": NASTY[i % len(NASTY)]} for i in range(20)]]
    for v in values:
        assert param_value(v) == stringify_param_value(v), v
    g = Graph.__new__(Graph)  # no connection needed: only the client's header builder is used
    params = {"rows": values[-1], "uids": ["a", 'b"'], "k": 3, "none": None}
    assert params_header(params) == g._build_params_header(params)
    assert params_header(None) == g._build_params_header(None) == ""
    assert params_header({}) == g._build_params_header({})
    for bad in ({"": 1}, {"a`b": 1}):
        with pytest.raises(ValueError):
            params_header(bad)
    with pytest.raises(ValueError):
        param_value({"a`b": 1})


def test_parse_cell_reads_the_compact_format():
    from graphstore.falkor_backend import parse_cell

    assert parse_cell([1, None], None) is None
    assert parse_cell([2, "ü"], None) == "ü" and parse_cell([2, b"x"], None) == "x"
    assert parse_cell([3, 7], None) == 7 and parse_cell([3, "7"], None) == 7
    assert parse_cell([4, "true"], None) is True and parse_cell([4, "false"], None) is False
    assert parse_cell([5, "0.25"], None) == 0.25
    assert parse_cell([6, [[3, 1], [2, "a"], [6, [[1, None]]]]], None) == [1, "a", [None]]


def test_parse_rows_matches_parse_cell():
    from graphstore.falkor_backend import parse_cell, parse_rows

    rows = [[[2, "u"], [3, 5], [1, None]], [[2, "v"], [5, "0.5"], [4, "true"], [6, [[3, 1], [5, "2.5"]]]], [],
            [[1, None]]]
    assert parse_rows(rows, None) == [[parse_cell(c, None) for c in row] for row in rows]
    assert parse_rows(rows, None)[1] == ["v", 0.5, True, [1, 2.5]]


def test_reads_return_typed_values(store):
    store.upsert_turns(with_emb(turn("t0", ts=1000), turn("t1", idx=1, ts=2000)))
    assert store.count("Turn") == 2 and isinstance(store.count("Turn"), int)
    sub = store.user_subgraph("u1", 5)
    assert sub.turn_ids == ["t0", "t1"] and sub.timestamps.tolist() == [1000, 2000] and sub.prev.tolist() == [-1, 0]


def test_query_embedding_cache_serves_repeated_reads_and_is_bounded(store):
    from graphstore import cypher

    turns = [turn(f"t{i}", idx=i, ts=1000 + i, query=f"q{i % 5}") for i in range(12)]
    store.upsert_turns(with_emb(*turns))
    expected = np.stack([emb(t.query) for t in turns])
    reads = []
    real_read = store._read

    def counting(q, params):
        reads.append(q)
        return real_read(q, params)

    store._read = counting
    store.emb_cache_size = 3
    first = store.user_subgraph("u1", 12)  # cold: embeddings come with the turns, one round trip
    assert reads == [cypher.USER_TURNS_ONE_EMB] and len(store._embs) == 3  # bounded: least recently used dropped
    np.testing.assert_array_equal(first.query_emb, expected)

    store.emb_cache_size = 100
    for _ in range(6):  # the cache fills and proves useful: reads switch to keys only
        np.testing.assert_array_equal(store.user_subgraph("u1", 12).query_emb, expected)
    reads.clear()
    warm = store.user_subgraph("u1", 12)
    assert reads == [cypher.USER_TURNS_ONE]  # one round trip, no embedding moved
    np.testing.assert_array_equal(warm.query_emb, expected)

    store._embs.popitem(last=False)  # a key the cache lost is read by key, once
    reads.clear()
    np.testing.assert_array_equal(store.user_subgraphs(["u1", "u1"], 12)[1].query_emb, expected)
    assert reads == [cypher.USER_TURNS_ONE, cypher.QUERY_EMBS]  # one distinct user: the single-user query
    for _ in range(2):  # reads that miss one key each: the cache no longer serves whole reads, so ...
        store._embs.popitem(last=False)
        store.user_subgraph("u1", 12)
    reads.clear()
    np.testing.assert_array_equal(store.user_subgraph("u1", 12).query_emb, expected)
    assert reads == [cypher.USER_TURNS_ONE_EMB]  # ... the embeddings come with the turns again

    # a returned matrix is the caller's own: writing to it does not touch the cache
    warm.query_emb[:] = 0
    np.testing.assert_array_equal(store.user_subgraph("u1", 12).query_emb, expected)
    assert store.query_embeddings(["unknown-key"]) == {"unknown-key": None}
    assert "unknown-key" not in store._embs  # unknown keys are not remembered: the query may come later


def test_cold_and_warm_reads_agree(store):
    turns = [turn(f"{u}-t{i}", user=u, idx=i, ts=1000 + i, query=f"q{i % 3}") for u in ("a", "b") for i in range(5)]
    store.upsert_turns(with_emb(*turns))
    cold = store.user_subgraphs(["a", "b", "nobody"], 4)
    store._emb_served = 1.0  # force the keys-only read on a cache that has everything
    warm = store.user_subgraphs(["a", "b", "nobody"], 4)
    store._forget_cached()
    store._emb_served = 1.0  # keys-only read on an empty cache: every embedding read by key
    keyed = store.user_subgraphs(["a", "b", "nobody"], 4)
    for x, y, z in zip(cold, warm, keyed):
        assert x.turn_ids == y.turn_ids == z.turn_ids and x.prev.tolist() == y.prev.tolist() == z.prev.tolist()
        assert x.query_emb.shape == y.query_emb.shape == z.query_emb.shape
        assert np.array_equal(x.query_emb, y.query_emb) and np.array_equal(x.query_emb, z.query_emb)


def test_clear_forgets_cached_embeddings(store):
    store.upsert_turns([(turn("t0", query="same text"), emb("one"), None)])
    np.testing.assert_array_equal(store.user_subgraph("u1", 1).query_emb[0], emb("one"))
    store.clear()
    store.upsert_turns([(turn("t0", query="same text"), emb("two"), None)])
    np.testing.assert_array_equal(store.user_subgraph("u1", 1).query_emb[0], emb("two"))
    assert store.query_embeddings([query_key("same text")])[query_key("same text")] is not None


def test_stack_vectors_matches_stack():
    v = np.arange(4, dtype=np.float32)
    cases = [[v, None, v * 2], [], [None, None], [v, np.arange(3, dtype=np.float32)], [v, v]]
    for vecs in cases:
        a = codec.stack_vectors(vecs)
        b = codec.stack([None if x is None else codec.encode(x) for x in vecs])
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape and np.array_equal(a, b)
        if vecs and vecs[0] is not None:
            assert not np.shares_memory(a, vecs[0])
