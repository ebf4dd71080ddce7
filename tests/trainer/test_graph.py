import numpy as np
import torch

from graphstore.schema import EDGE_TYPES, NODE_TYPES, UserSubgraph
from trainer.graph import Request, build_batch
from trainer.train import last_turns, select_turns, truncate

D = 8


def _sub(user: str, llms: list[str], ratings: list[float], conv: list[str], turn: list[int], prev: list[int],
         qkeys: list[str]) -> UserSubgraph:
    t = len(llms)
    rng = np.random.default_rng(len(user))
    return UserSubgraph(user, [f"{user}{i}" for i in range(t)], conv, llms, qkeys, np.array(turn), np.arange(t),
                        rng.normal(size=(t, D)).astype(np.float32), np.array(ratings, np.float32), np.array(prev))


def test_builder_shapes_edges_and_masking():
    a = _sub("a", ["m1", "m2", "m1", "m2"], [1.0, 0.0, np.nan, 0.4], ["c", "c", "c", "c"], [0, 0, 1, 1],
             [-1, -1, 0, 1], ["q1", "q1", "q2", "q2"])
    cold = UserSubgraph("new")
    b = _sub("b", ["m3"], [np.nan], ["d"], [0], [-1], ["q1"])
    emb = {m: np.full(D, i, np.float32) for i, m in enumerate(["m1", "m2", "m3"])}
    cands = np.ones((3, D), np.float32)
    reqs = [Request(0, np.zeros(D, np.float32), cands), Request(1, np.zeros(D, np.float32), cands[:2]),
            Request(2, np.zeros(D, np.float32), cands[:1])]
    g = build_batch([a, cold, b], reqs, emb)
    data = g.data
    assert set(data.node_types) == set(NODE_TYPES)
    assert data["user"].num_nodes == 3
    assert data["turn"].num_nodes == 5 and data["response"].num_nodes == 5
    assert data["query"].num_nodes == 2  # q1 shared by users a and b: one node per distinct query
    assert data["llm"].num_nodes == 3
    for et in EDGE_TYPES:
        assert et in data.edge_types
    assert data["turn", "by", "user"].edge_index[1].tolist() == [0, 0, 0, 0, 2]  # the cold user has no turns
    assert data["turn", "follows", "turn"].edge_index.tolist() == [[2, 3], [0, 1]]
    resp = data["response"].x
    # has_rating masks NaN, centered rating within the (conversation, turn) group, nothing for the unrated turn
    assert resp[:, 1].tolist() == [1.0, 1.0, 0.0, 1.0, 0.0]
    assert torch.allclose(resp[:2, 0], torch.tensor([0.5, -0.5]))
    assert resp[2, 0] == 0 and resp[3, 0] == 0  # its sibling is unrated: no comparison
    assert not torch.isnan(resp).any()
    assert g.cand.shape == (6, D) and g.counts == [3, 2, 1]
    assert g.cand_req.tolist() == [0, 0, 0, 1, 1, 2]
    # memory pairs: only rated turns of the request's own user answered by the candidate's LLM (the candidates'
    # embeddings are m2's, so they are taken for m2)
    pairs = set(zip(g.mem_cand.tolist(), g.mem_turn.tolist()))
    assert pairs == {(c, t) for c in range(3) for t in (1, 3)}
    # rated pairs of one comparison: only (0, 1); turns 2 and 3 share a group but 2 is unrated
    assert data["turn"].pair_index.tolist() == [[0], [1]]


def test_truncate_keeps_last_groups_and_remaps_prev():
    a = _sub("a", ["m1", "m2", "m1", "m2", "m1"], [1, 0, 1, 0, 1], ["c", "c", "c", "c", "e"], [0, 0, 1, 1, 0],
             [-1, -1, 0, 1, -1], ["q1", "q1", "q2", "q2", "q3"])
    t = truncate(a, 2)
    assert t.turn_ids == ["a2", "a3", "a4"]
    assert t.prev.tolist() == [-1, -1, -1]  # the previous turns were dropped
    assert len(truncate(a, 0)) == 0
    assert truncate(a, 10) is a


def test_last_turns_are_views_equal_to_selecting_the_same_turns():
    a = _sub("a", ["m1", "m2", "m1", "m2", "m1", "m2"], [1, 0, 1, 0, 1, 0], ["c", "c", "c", "c", "c", "c"],
             [0, 0, 1, 1, 2, 2], [-1, -1, 0, 1, 2, 3], ["q1", "q1", "q2", "q2", "q3", "q3"])
    for n in range(0, 6):
        got, want = last_turns(a, n), select_turns(a, np.arange(6 - n, 6))
        assert got.turn_ids == want.turn_ids and got.prev.tolist() == want.prev.tolist()
        for f in ("turn_index", "timestamps", "query_emb", "rating"):
            np.testing.assert_array_equal(getattr(got, f), getattr(want, f))
    assert last_turns(a, 3).prev.tolist() == [-1, -1, 0]  # links into the dropped turns become -1
    assert np.shares_memory(last_turns(a, 3).query_emb, a.query_emb)  # a view, not a copy


def test_comparisons_and_user_means_are_per_user():
    # two users with the same conversation id and turn index: their answers are not one comparison
    a = _sub("a", ["m1", "m2"], [1.0, 0.0], ["c", "c"], [0, 0], [-1, -1], ["q1", "q1"])
    b = _sub("bb", ["m1", "m2", "m1"], [0.2, np.nan, 0.8], ["c", "c", "e"], [0, 0, 0], [-1, -1, -1],
             ["q1", "q1", "q2"])
    emb = {m: np.zeros(D, np.float32) for m in ["m1", "m2"]}
    g = build_batch([a, b], [Request(1, np.zeros(D, np.float32), np.ones((2, D), np.float32))], emb)
    resp = g.data["response"].x
    assert g.data["turn"].group.tolist() == [0, 0, 1, 1, 2]
    assert torch.allclose(resp[:2, 0], torch.tensor([0.5, -0.5])) and resp[:2, 3].tolist() == [1.0, 1.0]
    assert resp[2:, 0].tolist() == [0.0, 0.0, 0.0] and resp[2:, 3].tolist() == [0.0, 0.0, 0.0]  # b: no rated pair
    # deviation from the user's own mean rating (a: 0.5, b: 0.5 over its two rated turns); unrated -> 0
    assert torch.allclose(resp[:, 4], torch.tensor([0.5, -0.5, -0.3, 0.0, 0.3]), atol=1e-6)
    # memory pairs of the one request (user b, 2 candidates named m1): b's rated m1 turns 2 and 4
    g = build_batch([a, b], [Request(1, np.zeros(D, np.float32), np.ones((2, D), np.float32), ["m1", "m1"])], emb)
    assert list(zip(g.mem_cand.tolist(), g.mem_turn.tolist())) == [(0, 2), (0, 4), (1, 2), (1, 4)]
    assert g.data["turn"].pair_index.tolist() == [[0], [1]]  # a's comparison; b's has one rated answer
