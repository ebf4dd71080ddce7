"""Crowd evidence (trainer/crowd.py): other users' centred ratings of the same query, never the user's own,
only from the training split; the model's crowd term and the ablation flags."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from graphstore.schema import HeldOutGroup, UserSubgraph
from trainer.config import GMTRouterConfig
from trainer.crowd import CrowdTable
from trainer.data import online_samples
from trainer.evaluate import ABLATIONS, DIAGNOSTICS
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


def _crowd(ds, user):
    return [g.crowd for s in online_samples(ds, "test", history=5, users={user}) for g in s.targets]


def test_a_users_crowd_evidence_never_holds_their_own_or_any_test_rating(tiny_ds):
    users = tiny_ds.users("test")
    shared = [u for u in users if any(c.any() for c in _crowd(tiny_ds, u))]
    assert shared, "the tiny simulator shares queries between users"
    u = shared[0]
    base = _crowd(tiny_ds, u)
    mine = _rescale(tiny_ds, lambda g: g.user_id != u)  # every rating of u reversed, in every split
    test = _rescale(tiny_ds, lambda g: g.split != "test")  # every test rating reversed, everybody's
    for other in (mine, test):
        for x, y in zip(base, _crowd(other, u)):
            np.testing.assert_allclose(x, y)
    theirs = _rescale(tiny_ds, lambda g: g.user_id == u or g.split != "train")  # the others' training ratings
    assert any(not np.allclose(x, y) for x, y in zip(base, _crowd(theirs, u)))


def test_held_out_groups_carry_evidence_per_candidate(tiny_ds):
    g = next(g for s in online_samples(tiny_ds, "test", history=5) for g in s.targets)
    assert isinstance(g, HeldOutGroup) and g.crowd.shape == (len(g.llm_ids),)
    np.testing.assert_allclose(g.crowd, tiny_ds.crowd.evidence(g.query_key, g.llm_ids, g.user_id))


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
                "crowd": m.crowd_weight is not None, "dot": type(m.head).__name__ == "DotHead",
                "hgt_reads_ratings": m.encoder is not None and m.encoder.rated is not None}

    full = built({})
    assert full == {"hgt": True, "personal": True, "memory": True, "counts": True, "conversation": True,
                    "crowd": True, "dot": False, "hgt_reads_ratings": False}
    removed = {"no_hgt": {"hgt"}, "hgt_only": {"personal", "memory", "counts", "conversation", "crowd"},
               "no_memory": {"memory", "counts"}, "no_personal": {"personal"}, "no_conversation": {"conversation"},
               "no_crowd": {"crowd"}}
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

