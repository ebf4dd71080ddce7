"""Feedback moves the decision the way the user asked (issue 20), for any user, history, query and LLM pair.

Checked on an untrained model, on one trained for a few steps on tiny data (a new deployment's regime), on an
untrained one with the robust (pseudo-Huber) prior, and for every ordered pair (A, B) of the catalog:
- a comparison of A and B on query q, visible but not rated yet, then rated "A beat B": score(A) - score(B)
  for q must not fall; rated "A beat B" must give at least the margin of "B beat A";
- a higher rating of A in a two-answer comparison (a thumbs-up, a higher score) must not lower A's margin;
- the same when the request continues the comparison's conversation;
- the per-user evidence weights (GMTRouter.gates) do not move with ratings.
bench/feedback.py checks the benchmark model the same way and the live stack end to end.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphstore.schema import UserSubgraph
from trainer.graph import Request, build_batch
from trainer.model import GMTRouter, GMTRouterConfig

D = 16
LLMS = [f"m{i}" for i in range(5)]
TOL = 1e-4  # the posterior is solved to 1e-6 per weight; float32 scores


def _catalog(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(len(LLMS), D)).astype(np.float32)
    return dict(zip(LLMS, e / np.linalg.norm(e, axis=1, keepdims=True)))


QUERIES = np.random.default_rng(1).normal(size=(12, D)).astype(np.float32)


def _history(groups: list[tuple[int, list[int], list[float]]]) -> UserSubgraph:
    """[(query row, llm indices, ratings (nan = unrated))] -> one user's subgraph, one conversation per group."""
    rows = [(g, qi, m, r) for g, (qi, ms, rs) in enumerate(groups) for m, r in zip(ms, rs)]
    n = len(rows)
    return UserSubgraph("u", [f"t{i}" for i in range(n)], [f"c{g}" for g, *_ in rows], [LLMS[m] for *_, m, _ in rows],
                        [f"q{qi}" for _, qi, _, _ in rows], np.zeros(n, np.int64), np.arange(n, dtype=np.int64),
                        QUERIES[[qi for _, qi, _, _ in rows]], np.array([r for *_, r in rows], np.float32),
                        np.full(n, -1, np.int64))


def _margin(model: GMTRouter, sub: UserSubgraph, q: np.ndarray, a: int, b: int, conv: str | None = None) -> float:
    cat = _catalog()
    req = Request(0, q, np.stack([cat[LLMS[a]], cat[LLMS[b]]]), [LLMS[a], LLMS[b]], conv)
    with torch.no_grad():
        s = model(build_batch([sub], [req], cat, emb_dim=D)).numpy()
    return float(s[0] - s[1])


def _model(trained: bool, robust: bool = False, memory_space: str = "text", two_scale: bool = False,
           prior_features: bool = False, levels: bool = False, level_llm: bool = False,
           leniency: bool = False) -> GMTRouter:
    torch.manual_seed(0)
    model = GMTRouter(GMTRouterConfig(emb_dim=D, hidden=16, topics=4, pref_dim=6, heads=2, robust_prior=robust,
                                      memory_space=memory_space, two_scale_recency=two_scale,
                                      prior_gate_features=prior_features, levels=levels or level_llm or leniency,
                                      level_center_llm=level_llm or leniency, level_leniency=leniency))
    with torch.no_grad():  # evidence weights well away from 0, so a wrong sign would show
        if levels:  # a weight that dominates the other terms, a centre away from 1/2, a decay within a history
            model.level_weight.fill_(2.0)
            model.levels.center.fill_(-0.8)
            model.levels.log_tau.fill_(np.log(0.02))
        if level_llm or leniency:  # the same, with each LLM's own centre, far apart between LLMs
            model.level_weight.fill_(2.0)
            model.levels.log_tau.fill_(np.log(0.02))
            model.levels.center_llm.weight.normal_(0.0, 3.0)
        if leniency:  # and nearly all of the user's own level taken off, barely shrunk
            model.levels.leniency_logit.fill_(4.0)
            model.levels.log_leniency_prior.fill_(np.log(0.01))
        if robust:  # a small kappa: the penalty is in its linear part for most weights
            model.pref.log_kappa.fill_(np.log(0.3))
        if two_scale:  # both decays short enough that the mix matters within a test history
            model.pref.log_tau.fill_(np.log(0.02))
            model.pref.log_tau_long.fill_(np.log(0.2))
            model.pref.short_logit.fill_(0.5)
        model.mem_weight.fill_(1.0)
        model.count_weight.fill_(1.0)
        model.conv_weight.fill_(1.0)
        if model.gate is not None:  # per-user weights that differ between users and histories
            model.gate.weight.normal_(0.0, 0.5)
        if model.prior_gate is not None:  # and per-user prior strengths
            model.prior_gate.weight.normal_(0.0, 0.5)
    if trained:
        from trainer.simulate import SimConfig, Simulator
        from trainer.data import training_samples
        from trainer.train import TrainConfig, fit
        from tests.trainer.conftest import synthetic_embeddings

        sim = Simulator(SimConfig(seed=5, n_users=12, n_new_users=0, turns_min=12, turns_max=16))
        q, m = synthetic_embeddings(sim)
        ds = sim.dataset(query_emb=q[:, :D] / np.linalg.norm(q[:, :D], axis=1, keepdims=True),
                         llm_emb=m[:, :D] / np.linalg.norm(m[:, :D], axis=1, keepdims=True))
        cfg = TrainConfig(model=model.cfg, steps=15, batch_size=8, eval_every=15, k_max=20)
        model = fit(training_samples(ds, "train", turns=20), [], cfg, init=model, progress=False, llms=ds.llms).model
    return model.eval()


MODELS = {"untrained": _model(False)}

group = st.tuples(st.integers(0, 11), st.lists(st.integers(0, 4), min_size=2, max_size=3, unique=True),
                  st.lists(st.sampled_from([0.0, 1.0, 0.5, 0.25, float("nan")]), min_size=3, max_size=3))
histories = st.lists(group, min_size=0, max_size=8).map(
    lambda gs: [(qi, ms, rs[:len(ms)]) for qi, ms, rs in gs])


SPACES = {"topic_memory": "topics", "sharpened_memory": "both"}  # the memory's similarity in those models


@pytest.fixture(scope="module", params=["untrained", "trained", "robust", "topic_memory", "sharpened_memory",
                                        "two_scale_recency", "prior_per_feature", "levels", "levels_per_llm",
                                        "levels_leniency"])
def model(request):
    if request.param not in MODELS:
        MODELS[request.param] = _model(request.param == "trained", robust=request.param == "robust",
                                       memory_space=SPACES.get(request.param, "text"),
                                       two_scale=request.param == "two_scale_recency",
                                       prior_features=request.param == "prior_per_feature",
                                       levels=request.param == "levels",
                                       level_llm=request.param == "levels_per_llm",
                                       leniency=request.param == "levels_leniency")
    return MODELS[request.param]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hist=histories, qi=st.integers(0, 11), same_conversation=st.booleans())
def test_a_beat_b_never_lowers_a_over_b(model, hist, qi, same_conversation):
    conv = f"c{len(hist)}" if same_conversation else None
    q = QUERIES[qi]
    for a, b in itertools.permutations(range(len(LLMS)), 2):
        before = _history(hist + [(qi, [a, b], [np.nan, np.nan])])
        won = _history(hist + [(qi, [a, b], [1.0, 0.0])])
        lost = _history(hist + [(qi, [a, b], [0.0, 1.0])])
        m0, m_won, m_lost = (_margin(model, h, q, a, b, conv) for h in (before, won, lost))
        assert m_won >= m0 - TOL, f"A={a} beat B={b} lowered the margin {m0:.5f} -> {m_won:.5f}"
        assert m_won >= m_lost - TOL, f"'A={a} beat B={b}' gives {m_won:.5f} < 'B beat A' {m_lost:.5f}"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hist=histories, qi=st.integers(0, 11), r_b=st.sampled_from([0.0, 0.5, 1.0]),
       low=st.sampled_from([0.0, 1 / 9, 0.5]), up=st.sampled_from([0.1, 0.5, 1.0]))
def test_a_higher_rating_never_lowers_the_margin(model, hist, qi, r_b, low, up):
    q = QUERIES[qi]
    high = min(1.0, low + up)
    for a, b in itertools.permutations(range(len(LLMS)), 2):
        lo = _margin(model, _history(hist + [(qi, [a, b], [low, r_b])]), q, a, b)
        hi = _margin(model, _history(hist + [(qi, [a, b], [high, r_b])]), q, a, b)
        assert hi >= lo - TOL, f"rating A={a} {low} -> {high} (B={b} at {r_b}) lowered the margin {lo:.5f} -> {hi:.5f}"


def _scores(model: GMTRouter, sub: UserSubgraph, q: np.ndarray) -> np.ndarray:
    """[5] every LLM's score for query q (one request with the whole catalog as candidates)."""
    cat = _catalog()
    req = Request(0, q, np.stack([cat[m] for m in LLMS]), list(LLMS))
    with torch.no_grad():
        return model(build_batch([sub], [req], cat, emb_dim=D)).numpy()


def _rise_over_every_llm(model: GMTRouter, hist: list, qi: int, a: int, b: int, low: float, high: float,
                         r_b: float) -> np.ndarray:
    """[5] how A's margin over each LLM moves when A's rating in a new comparison with B rises from low to high."""
    lo = _scores(model, _history(hist + [(qi, [a, b], [low, r_b])]), QUERIES[qi])
    hi = _scores(model, _history(hist + [(qi, [a, b], [high, r_b])]), QUERIES[qi])
    return (hi[a] - hi) - (lo[a] - lo)


@settings(max_examples=25, deadline=None)
@given(hist=histories, qi=st.integers(0, 11), r_b=st.sampled_from([0.0, 0.5, 1.0]),
       low=st.sampled_from([0.0, 1 / 9, 0.5]), up=st.sampled_from([0.1, 0.5, 1.0]))
def test_with_the_user_level_a_higher_rating_raises_a_over_every_llm(hist, qi, r_b, low, up):
    """The levels term with the user's own level taken off (GMTRouterConfig.level_leniency): a rise of A's rating
    also lifts the user's level, which every LLM's term reads, yet A's margin over every LLM (not only its sibling B)
    does not fall, as LevelMemory's docstring derives for a share lam < 1 of that level."""
    if "levels_leniency" not in MODELS:
        MODELS["levels_leniency"] = _model(False, leniency=True)
    model = MODELS["levels_leniency"]
    for a, b in itertools.permutations(range(len(LLMS)), 2):
        rise = _rise_over_every_llm(model, hist, qi, a, b, low, min(1.0, low + up), r_b)
        assert (rise >= -TOL).all(), f"A={a} rated {low} -> {low + up} lowered A's margins by {rise}"


def test_the_user_level_check_would_catch_too_large_a_share():
    """Not vacuous: take off 10 x the user's level (a share far above 1) and a higher rating of A lowers A's margin
    over an LLM the user never rated."""
    model = _model(False, leniency=True)
    user_level = model.levels.user_level
    model.levels.user_level = lambda b, w, r: 10.0 * user_level(b, w, r)
    assert _rise_over_every_llm(model, [], 0, 0, 1, 0.0, 1.0, 0.5)[2] < -0.1
    model.levels.user_level = user_level
    assert _rise_over_every_llm(model, [], 0, 0, 1, 0.0, 1.0, 0.5)[2] > 0.0


def test_the_property_would_catch_an_inverted_preference():
    """The check is not vacuous: flip the sign of the memory weight and a preference is inverted."""
    model = _model(False)
    with torch.no_grad():
        model.mem_weight.fill_(3.0)
    inverted = model.forward

    def forward(b):  # the memory term enters with the wrong sign
        return inverted(b) - 2 * torch.nn.functional.softplus(model.mem_weight) * 4.0 * model.memory(b)

    model.forward = forward
    q = QUERIES[0]
    m0 = _margin(model, _history([(0, [0, 1], [np.nan, np.nan])]), q, 0, 1)
    m1 = _margin(model, _history([(0, [0, 1], [1.0, 0.0])]), q, 0, 1)
    assert m1 < m0


def test_gates_give_each_user_their_own_weights_and_ignore_ratings():
    """Per-user evidence weights (GMTRouter.gates) differ between histories but never with the ratings, so a
    rating cannot flip the sign of its own evidence term."""
    torch.manual_seed(0)
    model = GMTRouter(GMTRouterConfig(emb_dim=D, hidden=16, topics=4, pref_dim=6, heads=2)).eval()
    with torch.no_grad():
        model.gate.weight.normal_(0.0, 0.5)
        model.prior_gate.weight.normal_(0.0, 0.5)
    cat = _catalog()
    req = Request(0, QUERIES[0], np.stack([cat[m] for m in LLMS]), list(LLMS))

    def gates(hist):
        """the evidence weights' shifts and the posterior's prior precision of this history's user"""
        b = build_batch([_history(hist)], [req], cat, emb_dim=D)
        kept: dict = {}
        with torch.no_grad():
            model(b, keep=kept)
            return np.concatenate([model.gates(b, kept["h"]).numpy().ravel(), kept["prec"].numpy().ravel()])

    short = [(0, [0, 1], [1.0, 0.0])]
    long = short + [(q, [q % 5, (q + 1) % 5], [0.0, 1.0]) for q in range(1, 9)]
    unrated = [(qi, ms, [np.nan] * len(ms)) for qi, ms, _ in long]
    assert not np.allclose(gates(short), gates(long))  # another history, other weights
    np.testing.assert_allclose(gates(long), gates(unrated), atol=1e-6)  # ratings do not move them
    shared = GMTRouter(GMTRouterConfig(emb_dim=D, hidden=16, topics=4, pref_dim=6, heads=2, gates=False))
    b = build_batch([_history(long)], [req], cat, emb_dim=D)
    assert not shared.gates(b, torch.zeros(1, 16)).any()  # without gates: the shared weights alone


def test_structure_input_is_the_share_of_follow_up_turns():
    """cfg.structure: the gates read 8 * (share of visible turns with a previous turn) - 4, from the graph's
    FOLLOWS edges; the same for any ratings."""
    def user(uid: str, conv_len: int, ratings: np.ndarray) -> UserSubgraph:
        n = 12
        prev = np.array([i - 2 if (i // 2) % conv_len else -1 for i in range(n)], np.int64)  # 2 answers per turn
        tidx = np.array([(i // 2) % conv_len for i in range(n)], np.int64)
        return UserSubgraph(uid, [f"{uid}t{i}" for i in range(n)], [f"{uid}c{i // (2 * conv_len)}" for i in range(n)],
                            [LLMS[i % 2] for i in range(n)], [f"q{i // 2}" for i in range(n)], tidx,
                            np.arange(n, dtype=np.int64), QUERIES[[i // 2 for i in range(n)]], ratings, prev)

    model = GMTRouter(GMTRouterConfig(emb_dim=D, hidden=16, topics=4, pref_dim=6, heads=2, structure=True)).eval()
    cat = _catalog()
    rng = np.random.default_rng(0)
    for ratings in (np.full(12, np.nan, np.float32), rng.random(12).astype(np.float32)):
        subs = [user("a", 1, ratings), user("b", 2, ratings), user("c", 3, ratings)]
        reqs = [Request(u, QUERIES[0], np.stack([cat[LLMS[0]], cat[LLMS[1]]]), LLMS[:2]) for u in range(3)]
        b = build_batch(subs, reqs, cat, emb_dim=D)
        with torch.no_grad():
            col = model.user_inputs(b, torch.zeros(3, 16))[:, -1].numpy()
        np.testing.assert_allclose(col, 8.0 * np.array([0.0, 1 / 2, 2 / 3]) - 4.0, atol=1e-6)
    assert GMTRouter(GMTRouterConfig(emb_dim=D, hidden=16, topics=4, pref_dim=6, heads=2,
                                     structure=False)).gate.in_features == 17
