"""Crowd evidence (trainer/crowd.py): other users' centred ratings of the same query, never the user's own; for
training targets only from the training split, for held-out targets only from before them in time; the model's
crowd term and the ablation flags."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from graphstore.schema import HeldOutGroup, UserSubgraph, query_key
from trainer.config import GMTRouterConfig
from trainer.crowd import CrowdTable
from trainer.data import Dataset, Group, held_out, online_samples, training_samples
from trainer.evaluate import ABLATIONS, DIAGNOSTICS, variants
from trainer.graph import Request, build_batch
from trainer.model import GMTRouter

D = 32


def test_table_centres_each_comparison_and_leaves_out_the_asking_user():
    t = CrowdTable(prior=1.0)
    for user, conv, ratings in (("a", "c1", {"m1": 1.0, "m2": 0.0}), ("b", "c2", {"m1": 0.8, "m2": 0.6, "m3": 0.4}),
                                ("c", "c3", {"m1": 0.9})):  # c: one rated answer, no comparison
        for m, r in ratings.items():
            t.add(user, conv, 0, "q", m, r)
    t.add("a", "c1", 0, "q", "m1", 0.0)  # a second rating of the same answer: the first one counts
    t.add("d", "c4", 0, "q", "m1", float("nan"))  # no rating
    np.testing.assert_allclose(t.evidence("q", ["m1", "m2", "m3", "m9"], "nobody"),
                               [(0.5 + 0.2) / 3, (-0.5 + 0.0) / 3, -0.2 / 2, 0.0], atol=1e-6)
    np.testing.assert_allclose(t.evidence("q", ["m1", "m2"], "a"), [0.2 / 2, 0.0], atol=1e-6)
    assert not t.evidence("other query", ["m1"], "nobody").any()


def _rescale(ds, keep):
    """A copy of the dataset whose groups failing ``keep(g)`` get reversed ratings."""
    groups = [g if keep(g) else dataclasses.replace(g, ratings=(1.0 - g.ratings).astype(np.float32))
              for g in ds.groups]
    return type(ds)(groups, ds.query_emb, ds.query_row, ds.llms)


def _targets(ds, user):
    return [g for s in online_samples(ds, "test", history=5, users={user}) for g in s.targets]


def _crowd(ds, user):
    return [g.crowd for g in _targets(ds, user)]


def test_evidence_before_a_time_counts_only_earlier_comparisons():
    t = CrowdTable(prior=1.0)
    t.add_comparison("a", "c1", 0, "q", ["m1", "m2"], np.array([1.0, 0.0]), timestamp=10)
    t.add_comparison("b", "c2", 0, "q", ["m1", "m2"], np.array([0.0, 1.0]), timestamp=20)
    t.add_comparison("c", "c3", 0, "q", ["m1", "m2"], np.array([1.0, 0.0]))  # no time stamp: never "before"
    np.testing.assert_allclose(t.evidence("q", ["m1", "m2"], "x", before_ms=11), [0.5 / 2, -0.5 / 2], atol=1e-6)
    np.testing.assert_allclose(t.evidence("q", ["m1", "m2"], "x", before_ms=21), [0.0, 0.0], atol=1e-6)
    assert not t.evidence("q", ["m1"], "x", before_ms=10).any()  # strictly before
    np.testing.assert_allclose(t.evidence("q", ["m1", "m2"], "x"), [0.5 / 4, -0.5 / 4], atol=1e-6)


def test_a_users_crowd_evidence_never_holds_their_own_rating(tiny_ds):
    users = tiny_ds.users("test")
    shared = [u for u in users if any(c.any() for c in _crowd(tiny_ds, u))]
    assert shared, "the tiny simulator shares queries between users"
    u = shared[0]
    base = _crowd(tiny_ds, u)
    mine = _rescale(tiny_ds, lambda g: g.user_id != u)  # every rating of u reversed, in every split
    for x, y in zip(base, _crowd(mine, u)):
        np.testing.assert_allclose(x, y)
    theirs = _rescale(tiny_ds, lambda g: g.user_id == u or g.split != "train")  # the others' training ratings
    assert any(not np.allclose(x, y) for x, y in zip(base, _crowd(theirs, u)))


def test_a_held_out_target_never_reads_a_later_rating(tiny_ds):
    """Targets whose query other users also rated later: reversing every rating from the target's time on (anyone's)
    leaves its crowd as it was."""
    table = tiny_ds.all_crowd
    later_rated = []  # (user, index of the target, its time)
    for u in tiny_ds.users("test"):
        for i, g in enumerate(_targets(tiny_ds, u)):
            if not np.allclose(table.evidence(g.query_key, g.llm_ids, u),
                               table.evidence(g.query_key, g.llm_ids, u, before_ms=g.timestamp)):
                later_rated.append((u, i, g.timestamp))
    assert later_rated, "the tiny simulator has test queries that others rate later"
    for user, i, ts in later_rated[:3]:
        later = _rescale(tiny_ds, lambda g, t=ts: g.timestamp < t)
        np.testing.assert_allclose(_crowd(later, user)[i], _crowd(tiny_ds, user)[i])


def _one_query_ds(rows, held_out_crowd="earlier"):
    """Users rating m1 against m2 on one query: rows of (user, split, timestamp, rating of m1)."""
    groups = [Group(u, f"{u}-{ts}", 1, "q?", ["m1", "m2"], np.array([r, 1.0 - r], np.float32), ts, split)
              for u, split, ts, r in rows]
    return Dataset(groups, np.zeros((1, D), np.float32), {query_key("q?"): 0}, {}, held_out_crowd=held_out_crowd)


def test_held_out_targets_read_earlier_ratings_of_every_split_training_targets_the_training_split():
    ds = _one_query_ds([("a", "train", 1, 1.0), ("b", "test", 2, 1.0), ("c", "valid", 3, 0.0),
                        ("d", "test", 4, 1.0), ("a", "train", 5, 1.0)])
    by_user = {(g.user_id, g.timestamp): g for g in ds.groups}
    # d's test target (t=4): a (+0.5), b (+0.5), c (-0.5) from before it, 3 comparisons + 1 pseudo-answer
    np.testing.assert_allclose(held_out(by_user["d", 4], ds).crowd, [0.5 / 4, -0.5 / 4], atol=1e-6)
    np.testing.assert_allclose(held_out(by_user["b", 2], ds).crowd, [0.5 / 2, -0.5 / 2], atol=1e-6)  # a only
    np.testing.assert_allclose(held_out(by_user["c", 3], ds).crowd, [1.0 / 3, -1.0 / 3], atol=1e-6)  # a, b
    # a's training target (t=1) reads the training split only, its own user left out: nobody
    assert not held_out(by_user["a", 1], ds).crowd.any()
    np.testing.assert_allclose(ds.crowd.evidence(query_key("q?"), ["m1"], "b"), [1.0 / 3])  # a's 2 training ones
    assert all(not g.crowd.any() for s in training_samples(ds, "train") for g in s.targets)


def test_the_training_split_crowd_protocol_reads_every_training_rating_and_nothing_else():
    rows = [("a", "train", 1, 1.0), ("b", "test", 2, 1.0), ("c", "valid", 3, 0.0), ("d", "test", 4, 1.0),
            ("a", "train", 5, 1.0)]
    ds = _one_query_ds(rows, held_out_crowd="train")
    d = next(g for g in ds.groups if g.user_id == "d")
    np.testing.assert_allclose(held_out(d, ds).crowd, [1.0 / 3, -1.0 / 3], atol=1e-6)  # a's two, the later one too
    with pytest.raises(ValueError, match="held_out_crowd"):
        _one_query_ds(rows, held_out_crowd="everything")


def test_held_out_groups_carry_evidence_per_candidate(tiny_ds):
    g = next(g for s in online_samples(tiny_ds, "test", history=5) for g in s.targets)
    assert isinstance(g, HeldOutGroup) and g.crowd.shape == (len(g.llm_ids),)
    np.testing.assert_allclose(g.crowd, tiny_ds.all_crowd.evidence(g.query_key, g.llm_ids, g.user_id, g.timestamp))


def _batch(crowd):
    rng = np.random.default_rng(0)
    req = Request(0, rng.normal(size=D).astype(np.float32), rng.normal(size=(2, D)).astype(np.float32), ["a", "b"],
                  crowd=None if crowd is None else np.array(crowd, np.float32))
    return build_batch([UserSubgraph("u")], [req], {}, emb_dim=D)


def test_the_crowd_term_raises_the_candidate_others_preferred():
    torch.manual_seed(0)
    model = GMTRouter(GMTRouterConfig(emb_dim=D, hidden=16, topics=4, pref_dim=6, heads=2)).eval()
    with torch.no_grad():
        none, up = model(_batch(None)), model(_batch([0.3, -0.3]))
    assert (up[0] - up[1]) > (none[0] - none[1])
    np.testing.assert_allclose((up - none).numpy(), [0.3 * 4 * np.log(2), -0.3 * 4 * np.log(2)], rtol=1e-5)
    off = GMTRouter(GMTRouterConfig(emb_dim=D, hidden=16, topics=4, pref_dim=6, heads=2, crowd=False)).eval()
    with torch.no_grad():
        torch.testing.assert_close(off(_batch(None)), off(_batch([0.3, -0.3])))


def test_a_config_from_before_the_crowd_term_reads_without_it():
    old = GMTRouterConfig().to_dict()
    del old["crowd"]
    assert GMTRouterConfig.from_dict(old).crowd is False
    assert GMTRouterConfig.from_dict(GMTRouterConfig().to_dict()).crowd is True
    del old["structure"]  # a checkpoint from before the gates read the conversation structure
    assert GMTRouterConfig.from_dict(old).structure is False
    assert GMTRouterConfig.from_dict(GMTRouterConfig(structure=True).to_dict()).structure is True


def test_each_ablation_builds_the_intended_modules():
    def built(change):
        m = GMTRouter(dataclasses.replace(GMTRouterConfig(emb_dim=D, hidden=16, topics=4, pref_dim=6, heads=2),
                                          **change))
        return {"hgt": m.encoder is not None, "personal": hasattr(m, "pref"), "memory": m.memory is not None,
                "counts": m.counts is not None, "conversation": m.conv_weight is not None,
                "crowd": m.crowd_weight is not None, "levels": m.levels is not None,
                "dot": type(m.head).__name__ == "DotHead",
                "hgt_reads_ratings": m.encoder is not None and m.encoder.rated is not None}

    full = built({})
    assert full == {"hgt": True, "personal": True, "memory": True, "counts": True, "conversation": True,
                    "crowd": True, "levels": True, "dot": False, "hgt_reads_ratings": False}
    removed = {"no_hgt": {"hgt"}, "hgt_only": {"personal", "memory", "counts", "conversation", "crowd", "levels"},
               "no_memory": {"memory", "counts"}, "no_personal": {"personal"}, "no_conversation": {"conversation"},
               "no_crowd": {"crowd"}, "no_levels": {"levels"}}
    assert set(ABLATIONS) == set(removed) | {"dot_head"}
    assert set(DIAGNOSTICS) == {"hgt_sees_ratings", "hgt_sees_ratings_only"}
    for name, change in (ABLATIONS | DIAGNOSTICS).items():
        got = built(change)
        if name == "dot_head":
            assert got == full | {"dot": True}
        elif name == "hgt_sees_ratings":
            assert got == full | {"hgt_reads_ratings": True}
        elif name == "hgt_sees_ratings_only":
            assert got == built(ABLATIONS["hgt_only"]) | {"hgt_reads_ratings": True}
        else:
            assert {k for k, v in full.items() if v and not got[k]} == removed[name], name
            assert {k for k, v in got.items() if v and not full[k]} == set(), name



def test_evaluation_trains_the_chosen_ablations():
    """run_evaluation's ``ablations``: every ablation, none, or only the named ones (a typo is an error)."""
    assert list(variants(True)) == ["gmtrouter", *ABLATIONS]
    assert list(variants(False)) == ["gmtrouter"]
    assert variants(["no_hgt"]) == {"gmtrouter": {}, "no_hgt": ABLATIONS["no_hgt"]}
    assert list(variants(["no_crowd", "no_hgt"], diagnostics=True)) == ["gmtrouter", "no_hgt", "no_crowd",
                                                                          *DIAGNOSTICS]
    with pytest.raises(ValueError, match="no_hgtt"):
        variants(["no_hgtt"])
