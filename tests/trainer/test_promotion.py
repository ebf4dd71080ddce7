"""Promotion by evidence (issue 24): the sign-test verdicts, and the count-based scorer."""

from __future__ import annotations

import numpy as np

from graphstore.schema import HeldOutGroup, TrainingSample, UserSubgraph
from trainer.count_scorer import CountScorer
from trainer.promotion import judge, pair_correct, pair_has


def _correct(rng, n: int, acc: float) -> np.ndarray:
    return (rng.random(n) < acc).astype(float)


def test_a_better_candidate_is_promoted_only_with_enough_pairs():
    rng = np.random.default_rng(0)
    count, cand = _correct(rng, 2000, 0.60), _correct(rng, 2000, 0.70)
    v = judge(cand, count, None)
    assert v.promote and not v.demote and "beats counting" in v.reason
    few = judge(cand[:50], count[:50], None, min_pairs=100)
    assert not few.promote and "only 50 fresh pairs" in few.reason


def test_a_bad_candidate_is_refused_even_when_nothing_serves():
    rng = np.random.default_rng(1)
    count = _correct(rng, 2000, 0.65)
    v = judge(1.0 - count, count, None)  # every pair reversed
    assert not v.promote and not v.demote and "not significantly better than counting" in v.reason


def test_equal_to_counting_is_not_enough():
    rng = np.random.default_rng(2)
    count = _correct(rng, 3000, 0.65)
    noisy = np.where(rng.random(3000) < 0.05, 1.0 - count, count)  # same quality, different pairs
    assert not judge(noisy, count, None).promote


def test_candidate_must_also_beat_the_serving_model_and_a_lagging_model_is_demoted():
    rng = np.random.default_rng(3)
    count, serving = _correct(rng, 3000, 0.62), _correct(rng, 3000, 0.72)
    cand = np.where(rng.random(3000) < 0.03, 1.0 - serving, serving)  # as good as serving, not better
    v = judge(cand, count, serving)
    assert not v.promote and not v.demote and "serving model" in v.reason
    lagging = _correct(rng, 3000, 0.52)
    v = judge(_correct(rng, 3000, 0.55), count, lagging)
    assert not v.promote and v.demote and "demoted" in v.reason
    assert set(v.tests) == {"candidate_vs_count", "candidate_vs_serving", "serving_vs_count"}


def _slices(rest_wins: int, rest_losses: int, new_wins: int):
    """Serving right on 70 % of 3,000 pairs; the first 200 compare an LLM it never learned. The candidate flips
    ``new_wins`` of serving's wrong answers there, and ``rest_wins`` wrong / ``rest_losses`` right ones on the rest."""
    serving = np.zeros(3000)
    serving[:140], serving[200:2180] = 1.0, 1.0  # 140 of 200 and 1980 of 2800 right
    cand = serving.copy()
    cand[140:140 + new_wins] = 1.0
    cand[2180:2180 + rest_wins] = 1.0
    cand[200:200 + rest_losses] = 0.0
    unlearned = np.arange(3000) < 200
    count = np.where(np.arange(3000) % 20 < 11, 1.0, 0.0)  # 55 % right
    return cand, count, serving, unlearned


def test_a_candidate_better_on_a_new_llms_pairs_and_level_elsewhere_is_promoted():
    cand, count, serving, unlearned = _slices(200, 200, 30)
    assert not judge(cand, count, serving).promote  # 230 wins, 200 losses over all pairs: not significant
    v = judge(cand, count, serving, unlearned=unlearned)
    assert v.promote and v.route == "unlearned LLMs" and v.unlearned_pairs == 200
    assert "never learned" in v.reason and v.tests["candidate_vs_serving_unlearned"]["wins"] == 30
    assert v.tests["candidate_vs_serving_rest"]["losses"] == 200
    assert not judge(cand, count, serving, unlearned=unlearned, min_new_pairs=0).promote  # the route is off
    assert not judge(cand, count, serving, unlearned=unlearned, min_new_pairs=201).promote  # too few of them


def test_a_candidate_worse_on_the_rest_or_overall_or_not_clearly_better_on_the_new_pairs_is_refused():
    unlearned = _slices(0, 0, 0)[3]
    v = judge(*_slices(190, 210, 30)[:3], unlearned=unlearned)  # rest 190 : 210 is no evidence of worse (p=0.17)
    assert v.promote and v.route == "unlearned LLMs"
    v = judge(*_slices(150, 220, 30)[:3], unlearned=unlearned)  # significantly worse on the rest
    assert not v.promote and v.route == "" and "nor on the 200 pairs" in v.reason
    v = judge(*_slices(210, 242, 30)[:3], unlearned=unlearned)  # rest not significantly worse, all 240 : 242
    assert v.tests["candidate_vs_serving_rest"]["p_worse"] > 0.05 and not v.promote
    v = judge(*_slices(200, 200, 3)[:3], unlearned=unlearned)  # 3 wins, 0 losses on the new pairs: p = 0.125
    assert not v.promote
    cand, count, serving, unlearned = _slices(200, 200, 30)
    v = judge(cand, count, None, unlearned=unlearned)  # nothing serves: beating counting is enough, no slices
    assert v.promote and v.route == "all pairs" and v.unlearned_pairs == 0


def test_pair_has_marks_the_pairs_of_the_given_llms():
    g = HeldOutGroup("u", "q", np.zeros(2, np.float32), ["a", "b", "c"], np.array([1.0, 0.0, 0.5], np.float32), 0)
    assert pair_has([g], {"c"}).tolist() == [False, True, True]
    assert pair_has([g, g], {"a"}).tolist() == [True, True, False] * 2


def test_pair_correctness_follows_the_metrics_pairs():
    g = HeldOutGroup("u", "q", np.zeros(2, np.float32), ["a", "b", "c"], np.array([1.0, 0.0, 0.5], np.float32), 0)
    assert pair_correct([g], [np.array([3.0, 1.0, 2.0])]).tolist() == [1.0, 1.0, 1.0]
    assert pair_correct([g], [np.array([1.0, 1.0, 2.0])]).tolist() == [0.5, 0.0, 1.0]


def _visible(pairs: list[tuple[str, str]]) -> UserSubgraph:
    """Comparisons (winner, loser), one conversation each."""
    n = 2 * len(pairs)
    return UserSubgraph("u", [f"t{i}" for i in range(n)], [f"c{i // 2}" for i in range(n)],
                        [m for p in pairs for m in p], ["q"] * n, np.zeros(n, np.int64), np.arange(n),
                        np.zeros((n, 2), np.float32), np.array([1.0, 0.0] * len(pairs), np.float32),
                        np.full(n, -1))


def test_count_scorer_ranks_by_shrunk_win_rate_and_counts_global_rates(tmp_path):
    vis = _visible([("a", "b"), ("a", "b"), ("c", "a")])
    sc = CountScorer(prior=2.0)
    target = HeldOutGroup("u", "q", np.zeros(2, np.float32), ["a", "b", "c"], np.array([1, 0, 0], np.float32), 1,
                          "c9", 1)
    (s,) = sc.score_samples([TrainingSample(vis, [target])])
    # a won 2 of 3, b 0 of 2, c 1 of 1; each shrunk by 2 pseudo-games at the uniform rate 1/2
    np.testing.assert_allclose(s, [(2 + 1) / (3 + 2), (0 + 1) / (2 + 2), (1 + 1) / (1 + 2)])
    assert s[2] > s[0] > s[1]
    g = CountScorer.counted([TrainingSample(vis, [target])])
    assert g.pairs == 4 and g.rates["b"] < 0.5 < g.rates["a"]
    g.save(tmp_path)
    assert CountScorer.load(tmp_path).rates == g.rates
    assert CountScorer.load(tmp_path / "none").rates == {}  # before any cycle: uniform


def test_the_cycle_history_names_the_route_a_candidate_was_promoted_by():
    from trainer.refresh_cli import promoted_cell

    assert promoted_cell({"promoted": True, "verdict": {"route": "unlearned LLMs"}}) == "yes, on new LLMs"
    assert promoted_cell({"promoted": True, "verdict": {"route": "all pairs"}}) == "yes"
    assert promoted_cell({"promoted": True}) == "yes"  # a record from before routes were logged
    assert promoted_cell({"promoted": False, "demoted": True}) == "demoted"
    assert promoted_cell({"promoted": False, "verdict": {}}) == "no"
