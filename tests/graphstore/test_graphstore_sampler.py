"""Training samples read from the graph respect time: nothing visible comes after what is predicted."""

from __future__ import annotations

import itertools
import math

import numpy as np

from graphstore.counts import per_llm, win_counts
from graphstore.sampler import PastCounts
from graphstore.schema import query_key
from trainer.baselines import user_counts, visible_comparisons
from graphstore_events import emb, thumbs, turn, with_emb


def ingest_users(store, n_users=6, n_turns=8, llms=("m1", "m2", "m3")):
    """Each user: n_turns comparison groups (every LLM answers), ratings given 50 ms after the answers,
    and for odd users one group whose feedback arrives only much later."""
    turns, fbs = [], []
    for u in range(n_users):
        for i in range(n_turns):
            t0 = 10_000 * u + 1000 * i
            for j, m in enumerate(llms):
                tid = f"u{u}-{i}-{m}"
                turns.append(turn(tid, f"u{u}", f"c{u}-{i // 4}", i % 4, t0 + j, m, query=f"q {u} {i}"))
                late = u % 2 == 1 and i == 1
                fbs.append(thumbs(f"f-{tid}", tid, (i + j + u) % 2 == 0, t0 + (900_000 if late else 50),
                                  user=f"u{u}"))
    store.upsert_turns(with_emb(*turns))
    store.upsert_feedback(fbs)
    return turns


def test_samples_are_time_respecting(store):
    ingest_users(store)
    samples = store.sample_training(n_users=100, k=5, seed=1)
    assert len(samples) == 6 and len({s.visible.user_id for s in samples}) == 6
    for s in samples:
        v = s.visible
        assert 1 <= len(v) <= 5 and s.targets
        last_visible = int(v.timestamps.max())
        for g in s.targets:
            assert g.user_id == v.user_id
            assert g.timestamp > last_visible  # strictly later than every visible turn
            assert len(g.llm_ids) >= 2 and g.ratings.shape == (len(g.llm_ids),)
            assert g.query_emb.shape == (384,)
            assert g.query_key not in v.query_keys
        cut = min(g.timestamp for g in s.targets)
        # a visible rating is only there if its feedback came before the first target
        for tid, ts, r in zip(v.turn_ids, v.timestamps.tolist(), v.rating.tolist()):
            late = tid.startswith(("u1-1-", "u3-1-", "u5-1-"))
            assert math.isnan(r) == late or (not late and ts + 50 >= cut)


def test_targets_carry_query_embedding_and_ratings(store):
    ingest_users(store, n_users=1, n_turns=3)
    s = store.sample_training(n_users=1, k=10, seed=0)[0]
    for g in s.targets:
        i = int(g.query_key == query_key("q 0 2")) + 1
        np.testing.assert_array_equal(g.query_emb, emb(f"q 0 {i}"))
        assert g.llm_ids == ["m1", "m2", "m3"]
        assert g.ratings.tolist() == [float((i + j) % 2 == 0) for j in range(3)]


def test_sampler_is_seeded_and_respects_limits(store):
    ingest_users(store)
    a = store.sample_training(n_users=3, k=4, seed=5)
    b = store.sample_training(n_users=3, k=4, seed=5)
    assert [(s.visible.turn_ids, [g.query_key for g in s.targets]) for s in a] == \
           [(s.visible.turn_ids, [g.query_key for g in s.targets]) for s in b]
    assert len(a) == 3
    assert all(len(s.targets) >= 3 for s in store.sample_training(n_users=10, k=4, min_targets=3, seed=2))
    assert all(len(s.targets) == 1 for s in store.sample_training(n_users=10, k=4, max_targets=1, seed=2))
    assert store.sample_training(n_users=10, k=4, since_ms=10_000 * 5) and \
        {s.visible.user_id for s in store.sample_training(n_users=10, k=4, since_ms=10_000 * 5)} == {"u5"}


def test_single_rated_turns_only_with_min_llms_1(store):
    store.upsert_turns(with_emb(*(turn(f"t{i}", idx=i, ts=1000 + i) for i in range(4))))
    store.upsert_feedback([thumbs(f"f{i}", f"t{i}", i % 2 == 0, 1000 + i) for i in range(4)])
    assert store.sample_training(n_users=5, k=3, seed=0) == []
    (s,) = store.sample_training(n_users=5, k=3, min_llms=1, seed=0)
    assert all(len(g.llm_ids) == 1 for g in s.targets)
    assert all(g.timestamp > s.visible.timestamps.max() for g in s.targets)


def test_empty_graph_gives_no_samples(store):
    assert store.sample_training(n_users=5, k=3, seed=0) == []


def test_served_samples_read_every_turn_before_each_comparison(store):
    """What the promotion judge scores: each comparison from the cutoff on, with the last k turns before it and
    only the ratings given before it, as a router serving it would read them."""
    ingest_users(store, n_users=2, n_turns=8)
    after = 10_000 + 5000  # user u1's groups 5, 6, 7; none of u0's (before 10,000)
    out = store.serving_samples(["u0", "u1"], k=30, after_ms=after)
    assert [(s.visible.user_id, s.targets[0].timestamp) for s in out] == [("u1", 10_000 + 1000 * i) for i in (5, 6, 7)]
    for i, s in zip((5, 6, 7), out):
        v = s.visible
        assert len(v) == 3 * i and int(v.timestamps.max()) < s.targets[0].timestamp  # every earlier answer
        # u1's group 1 got its ratings 900 s later, after every target here: unrated; the rest rated
        assert {tid for tid, r in zip(v.turn_ids, v.rating.tolist()) if math.isnan(r)} == {
            f"u1-1-{m}" for m in ("m1", "m2", "m3")}
    assert len(store.serving_samples(["u1"], k=6, after_ms=after)[0].visible) == 6  # the last k turns
    assert store.serving_samples(["u0"], k=6, after_ms=after) == []


def test_served_samples_count_the_whole_past_as_the_router_does(store):
    """The judge and the watch score counting as routers serve it: each LLM's wins over the user's whole past
    (rated before the comparison), not only the last k turns the model reads."""
    ingest_users(store, n_users=2, n_turns=8)
    out = store.serving_samples(["u1"], k=6, after_ms=10_000 + 5000)
    for i, s in zip((5, 6, 7), out):
        # u1's groups before i, but group 1 (rated 900 s later, after every target here)
        rows = [(f"c1-{g // 4}", g % 4, m, float((g + j + 1) % 2 == 0))
                for g in range(i) if g != 1 for j, m in enumerate(("m1", "m2", "m3"))]
        assert s.visible.win_counts == per_llm(rows)
        last6 = win_counts(visible_comparisons(s.visible))
        assert user_counts(s.visible) != last6  # the last 6 turns alone count otherwise
        wins, games = user_counts(s.visible)
        assert games == {m: 2.0 * (i - 1) for m in ("m1", "m2", "m3")} and wins == {m: w for m, (w, _) in
                                                                                   per_llm(rows).items()}


def test_past_counts_match_the_routers_count_at_every_time():
    """PastCounts.before(t), asked at rising times, is graphstore.counts.per_llm over the comparisons answered
    and rated before t, with ties, late ratings and comparisons rated one answer at a time."""
    rng = np.random.default_rng(0)
    rows = []
    for g in range(40):
        t0 = 1000 * g
        for j, m in enumerate(rng.choice(["a", "b", "c", "d"], size=int(rng.integers(1, 4)), replace=False)):
            rated = rng.random() < 0.8
            rows.append([f"t{g}-{j}", f"c{g // 3}", str(m), f"q{g}", g % 3, t0 + j, float(rng.integers(0, 3)) / 2
                         if rated else None, t0 + int(rng.integers(10, 20_000)) if rated else None, None])
    counter = PastCounts.of_rows(rows)
    for t in range(0, 60_000, 700):
        known = [(r[1], r[4], r[2], r[6]) for r in rows if r[6] is not None and r[5] < t and r[7] < t]
        assert counter.before(t) == per_llm(known)


def test_served_samples_from_each_users_own_mark(store):
    """The live watch reads each user's comparisons from their own mark up to (not including) their newest
    turn: per-user bounds give the same samples as one bound filtered afterwards."""
    ingest_users(store, n_users=3, n_turns=8)
    marks = {"u0": 3000, "u1": 10_000 + 6000, "u2": 20_000}
    until = {"u0": 6000, "u1": 10_000 + 7000, "u2": 20_000 + 7000}
    out = store.serving_samples(list(marks), k=5, after_ms=marks, until_ms=until)
    every = store.serving_samples(list(marks), k=5, after_ms=0)
    keep = [s for s in every if marks[s.visible.user_id] <= s.targets[0].timestamp < until[s.visible.user_id]]
    assert [(s.visible.user_id, s.targets[0].timestamp) for s in out] == [
        ("u0", 3000), ("u0", 4000), ("u0", 5000), ("u1", 16_000), *(("u2", 20_000 + 1000 * i) for i in range(1, 7))]
    for a, b in zip(out, keep, strict=True):
        assert a.visible.turn_ids == b.visible.turn_ids and a.visible.win_counts == b.visible.win_counts
        np.testing.assert_array_equal(a.visible.rating, b.visible.rating)


def test_served_samples_read_only_what_they_use(store):
    """The bounded read (the turns from each user's mark on, the newest k before it, the whole past's rated
    answers without text) gives exactly the samples of the whole history, with late and missing ratings, marks
    inside a comparison, per-user bounds, and several batches of users."""
    from graphstore.sampler import serving_samples

    rng = np.random.default_rng(7)
    turns, fbs, marks, until = [], [], {}, {}
    for u in range(5):
        t = 100_000 * u
        for i in range(30):
            t0 = t + 1000 * i
            for j, m in enumerate(rng.choice(["m1", "m2", "m3", "m4"], size=int(rng.integers(1, 4)), replace=False)):
                tid = f"u{u}-{i}-{m}"
                turns.append(turn(tid, f"u{u}", f"c{u}-{i // 5}", i % 5, t0 + j, str(m), query=f"q {u} {i % 12}"))
                if rng.random() < 0.85:
                    late = int(rng.choice([50, 50, 5_000, 60_000]))
                    fbs.append(thumbs(f"f-{tid}", tid, bool(rng.random() < 0.5), t0 + late, user=f"u{u}"))
        marks[f"u{u}"] = t + 1000 * int(rng.integers(3, 25)) + int(rng.integers(0, 2))  # +1: inside a comparison
        until[f"u{u}"] = marks[f"u{u}"] + 1000 * int(rng.integers(1, 8)) + 1
        old = [e.event_id for e in turns if e.user_id == f"u{u}" and e.timestamp < marks[f"u{u}"] - 2000]
        fbs.append(thumbs(f"at-mark-u{u}", old[0], True, marks[f"u{u}"], user=f"u{u}"))  # rated at the bound itself
    store.upsert_turns(with_emb(*turns))
    store.upsert_feedback(fbs)
    store.batch_size = 2  # three batches of users
    whole = store._user_rows(list(marks), 1_000_000)  # every stored turn
    for k in (3, 8, 40):
        for bound, end in ((marks, until), (marks, None), (min(marks.values()), None)):
            def at(u, d=bound):
                return d[u] if isinstance(d, dict) else d

            got = store.serving_samples(list(marks), k, bound, until_ms=end)
            want = [s for u in marks for s in serving_samples(u, whole[u], k, at(u), 2, None,
                                                              None if end is None else end[u])]
            assert len(got) == len(want) > 0
            for a, b in zip(got, want):
                assert a.visible.turn_ids == b.visible.turn_ids and a.visible.win_counts == b.visible.win_counts
                np.testing.assert_array_equal(a.visible.rating, b.visible.rating)
                assert [(g.llm_ids, g.ratings.tolist(), g.timestamp) for g in a.targets] == \
                    [(g.llm_ids, g.ratings.tolist(), g.timestamp) for g in b.targets]


def test_training_samples_read_only_what_they_use(store, monkeypatch):
    """sample_training reads each user's comparisons without their turns, then only a sample's own turns, and
    draws exactly the samples graphstore.sampler.sample_user draws from the whole history with the same generator:
    the same cut, visible turns and ratings, and targets, with unrated and one-answer comparisons, late ratings,
    two questions at one conversation turn, bounds on the targets, several batches of users, too few users wanted
    (the generator is left as the whole-history draw leaves it: a cycle draws again from it), and cuts only from a
    time on (a cycle's window); the same when the passes keep the comparisons they read, and then no user's are
    read twice."""
    from graphstore.sampler import sample_user

    rng = np.random.default_rng(5)
    turns, fbs = [], []
    for u in range(7):
        for i in range(int(rng.integers(2, 30))):
            t0 = 100_000 * u + 1000 * i
            for j, m in enumerate(rng.choice(["m1", "m2", "m3", "m4"], size=int(rng.integers(1, 4)), replace=False)):
                tid = f"u{u}-{i}-{m}"
                second = i % 4 == 1 and j > 0  # a second question at one turn, asked at the same time
                q = f"q {u} {i % 9}" if not second else f"other {u} {i}"
                turns.append(turn(tid, f"u{u}", f"c{u}-{i // 5}", i % 5, t0 + (0 if second else j), str(m), query=q))
                if rng.random() < 0.8:
                    late = int(rng.choice([50, 50, 5_000, 60_000]))
                    fbs.append(thumbs(f"f-{tid}", tid, bool(rng.random() < 0.5), t0 + late, user=f"u{u}"))
    store.upsert_turns(with_emb(*turns))
    store.upsert_feedback(fbs)
    store.batch_size = 2  # several batches of users
    users = [u for u, _ in store.active_users()]
    whole = store._user_rows(users, 1_000_000)  # every stored turn

    def reference(n, k, seed, **kw):
        out = []
        for j in seed.permutation(len(users)):
            s = sample_user(users[j], whole[users[j]], k, seed, **kw)
            if s is not None:
                out.append(s)
                if len(out) >= n:
                    break
        return out

    from graphstore import cypher

    read = store._read
    reads = []  # the users each USER_COMPARISONS read asked for
    monkeypatch.setattr(store, "_read", lambda q, p: (reads.append(p["uids"]) if q == cypher.USER_COMPARISONS
                                                      else None) or read(q, p))
    for (n, k, kw), kept in itertools.product(
            ((100, 5, {}), (3, 2, {"max_targets": 2}), (100, 0, {"min_targets": 3}),
             (4, 40, {"min_llms": 1, "max_targets": 5}), (100, 3, {"min_llms": 1, "max_targets": 1}),
             (100, 5, {"cuts_since": 310_000}), (3, 4, {"max_targets": 2, "cuts_since": 415_000})), (False, True)):
        got_rng, want_rng = np.random.default_rng(3), np.random.default_rng(3)
        kept = {} if kept else None
        reads.clear()
        for i in range(2):  # as a cycle draws its passes from one generator (and keeps what it read: ``kept``)
            got = store.sample_training(n, k, seed=got_rng, comparisons=kept, **kw)
            want = reference(n, k, want_rng, **kw)
            asked = [u for part in reads for u in part]
            assert asked and (kept is None or len(asked) == len(set(asked)))  # kept: each user's read once
            assert len(got) == len(want) > 0 and len(got) <= n
            for a, b in zip(got, want):
                assert a.visible.user_id == b.visible.user_id and a.visible.turn_ids == b.visible.turn_ids
                np.testing.assert_array_equal(a.visible.rating, b.visible.rating)
                assert [(g.query_key, g.llm_ids, g.ratings.tolist(), g.timestamp, g.turn) for g in a.targets] == \
                    [(g.query_key, g.llm_ids, g.ratings.tolist(), g.timestamp, g.turn) for g in b.targets]
                for ga, gb in zip(a.targets, b.targets):
                    np.testing.assert_array_equal(ga.query_emb, gb.query_emb)
        assert got_rng.integers(1 << 30) == want_rng.integers(1 << 30)


def test_tied_targets_are_taken_in_query_key_order(store):
    """Two possible targets that start at the same time, at the only cut: with room for one, sample_training takes
    the one sample_user takes (the first by query key), whichever of the two was stored first."""
    from graphstore.sampler import sample_user

    turns, fbs = [], []
    for u, questions in (("a", ["alpha", "omega"]), ("b", ["omega", "alpha"])):  # stored in both orders
        turns.append(turn(f"{u}-0", u, f"{u}-c0", 0, 1000, "m1", query="first"))
        for n, q in enumerate(questions):
            for j, m in enumerate(["m1", "m2"]):
                tid = f"{u}-{q}-{m}"
                turns.append(turn(tid, u, f"{u}-c{n + 1}", 0, 5000, m, query=q))
                fbs.append(thumbs(f"f-{tid}", tid, j == n % 2, 6000, user=u))
    store.upsert_turns(with_emb(*turns))
    store.upsert_feedback(fbs)
    whole = store._user_rows(["a", "b"], 1_000_000)  # every stored turn
    got = {s.visible.user_id: s for s in store.sample_training(2, 5, min_targets=2, seed=0, max_targets=1)}
    first = min(query_key("alpha"), query_key("omega"))
    for u in ("a", "b"):
        want = sample_user(u, whole[u], 5, np.random.default_rng(0), min_targets=2, max_targets=1)
        assert [g.query_key for g in got[u].targets] == [g.query_key for g in want.targets] == [first]
