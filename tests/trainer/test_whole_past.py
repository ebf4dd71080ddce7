"""GMTRouterConfig.whole_past: the counts term counts each candidate's record over the user's whole past."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphstore.counts import win_counts
from trainer.config import GMTRouterConfig, TrainConfig
from trainer.data import iter_online_samples, records_before, training_samples
from trainer.explain import pushes
from trainer.graph import Request, build_batch
from trainer.history import serving_history
from trainer.model import GMTRouter
from trainer.train import llm_table, training_batch
from tests.trainer.test_monotone import D, LLMS, QUERIES, _catalog, _history


def _request(a: int, b: int) -> Request:
    cat = _catalog()
    return Request(0, QUERIES[0], np.stack([cat[LLMS[a]], cat[LLMS[b]]]), [LLMS[a], LLMS[b]])


HIST = [(0, [0, 1], [1.0, 0.0]), (1, [0, 2], [1.0, 0.0]), (2, [1, 2, 3], [0.5, 1.0, 0.0]), (3, [0, 1], [np.nan, 1.0])]


def test_past_counts_read_the_attached_counts_or_count_the_turns():
    sub = _history(HIST)
    counted = build_batch([sub], [_request(0, 1)], _catalog(), emb_dim=D, past_counts=True).past
    # m0 won both its rated games; m1 lost to m0, lost to m2, beat m3 (the last comparison has one rating)
    np.testing.assert_allclose(counted[0].numpy(), [1.0, -0.5])  # wins - games / 2
    np.testing.assert_allclose(counted[1].numpy(), [2.0, 3.0])  # games
    sub.win_counts = {LLMS[0]: (3.0, 10.0)}  # the reader's whole-past counts win over the turns
    attached = build_batch([sub], [_request(0, 1)], _catalog(), emb_dim=D, past_counts=True).past
    np.testing.assert_allclose(attached[0].numpy(), [-2.0, 0.0])
    np.testing.assert_allclose(attached[1].numpy(), [10.0, 0.0])
    assert build_batch([sub], [_request(0, 1)], _catalog(), emb_dim=D).past is None  # only when asked


def test_a_whole_past_model_needs_the_counts_and_they_move_its_scores():
    torch.manual_seed(0)
    model = GMTRouter(GMTRouterConfig(emb_dim=D, hidden=16, topics=4, pref_dim=6, heads=2, whole_past=True)).eval()
    sub = _history(HIST)
    with pytest.raises(ValueError, match="past_counts"):
        model(build_batch([sub], [_request(0, 1)], _catalog(), emb_dim=D))
    with torch.no_grad():
        before = model(build_batch([sub], [_request(0, 1)], _catalog(), emb_dim=D, past_counts=True)).numpy()
        sub.win_counts = {LLMS[0]: (0.0, 20.0), LLMS[1]: (20.0, 20.0)}  # a long past where m1 always won
        after = model(build_batch([sub], [_request(0, 1)], _catalog(), emb_dim=D, past_counts=True)).numpy()
    assert after[1] - after[0] > before[1] - before[0]


def test_pushes_add_up_with_whole_past_counts():
    """The explanation's totals include the whole-past counts (not attributed to a visible turn)."""
    torch.manual_seed(0)
    model = GMTRouter(GMTRouterConfig(emb_dim=D, hidden=16, topics=4, pref_dim=6, heads=2, whole_past=True)).eval()
    with torch.no_grad():
        model.count_weight.fill_(1.0)
    sub = _history(HIST)
    sub.win_counts = {LLMS[0]: (4.0, 12.0), LLMS[1]: (9.0, 12.0)}
    with torch.no_grad():
        b = build_batch([sub], [_request(0, 1)], _catalog(), emb_dim=D, past_counts=True)
        kept: dict = {}
        s = model(b, keep=kept).numpy()
        total, _ = pushes(model, b, kept)
        t_req, t_graph = model.topics(b.query), model.topics(b.data["query"].x)
        h = model.encoder(b, t_graph)
        g = model.head(h[b.req_user][b.cand_req], t_req, b.cand_req, b.cand_unique, b.cand_inv).numpy()
    np.testing.assert_allclose(total, s - g, atol=1e-4)


def test_records_before_count_each_prefix(tiny_ds):
    tl = next(iter(tiny_ds.timelines.values()))
    rec = records_before(tl)
    assert len(rec) == len(tl) + 1 and rec[0] == {}
    for i in (1, len(tl) // 2, len(tl)):
        wins, games = win_counts([([m for m, r in zip(g.llm_ids, g.ratings) if not np.isnan(r)],
                                   g.ratings[~np.isnan(g.ratings)]) for g in tl[:i]])
        assert rec[i] == {m: (wins.get(m, 0.0), n) for m, n in games.items()}


def test_served_samples_carry_the_whole_past_beside_the_last_turns(tiny_ds):
    samples = list(iter_online_samples(tiny_ds, "test", turns=8))
    long = [s for s in samples if s.visible.win_counts and sum(g for _, g in s.visible.win_counts.values()) > 0]
    assert long
    for s in long[:20]:
        visible_games = sum(win_counts([(list(ls), rs) for ls, rs in _groups(s.visible)])[1].values())
        assert sum(g for _, g in s.visible.win_counts.values()) >= visible_games
    assert any(sum(g for _, g in s.visible.win_counts.values()) >
               sum(win_counts([(list(ls), rs) for ls, rs in _groups(s.visible)])[1].values()) for s in long)


def _groups(v):
    out: dict = {}
    for c, t, m, r in zip(v.conversation_ids, v.turn_index.tolist(), v.llm_ids, v.rating.tolist()):
        if not np.isnan(r):
            out.setdefault((c, t), ([], []))
            out[(c, t)][0].append(m)
            out[(c, t)][1].append(r)
    return [(ls, np.array(rs)) for ls, rs in out.values()]


def test_training_cuts_below_the_served_history_stand_for_users_with_that_past_only(tiny_ds):
    """A training history cut to fewer turns than routers read is a short user: its counts are its turns'; one
    cut at or above it keeps the whole past's counts, as a router serving a long user."""
    cfg = TrainConfig(model=GMTRouterConfig(emb_dim=32, whole_past=True))
    big = [s for s in training_samples(tiny_ds, "train", turns=400) if len(s.visible) > 20][:1]
    assert big
    s = big[0]
    s.visible.win_counts = {m: (1.0, 50.0) for m in tiny_ds.llms}  # stands out from the turns' counts
    emb = llm_table(tiny_ds.llms)
    short, _ = training_batch([s], [5], emb, cfg, reverse_edges=False)
    kept, _ = training_batch([s], [len(s.visible) if len(s.visible) < serving_history() else serving_history()],
                             emb, cfg, reverse_edges=False)
    assert float(short.past[1].max()) < 50.0  # counted from the 5 turns
    assert float(kept.past[1].min()) == 50.0  # the attached whole past
