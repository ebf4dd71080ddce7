"""The periodic trainer's cycle on a real graph: counting serves first, a candidate needs evidence to be
promoted, a bad candidate is refused even when nothing serves, a model that falls behind is demoted."""

from __future__ import annotations

import copy

import pytest

from trainer.refresh import RefreshConfig, RefreshTrainer, split_prequential

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_prequential_split_never_trains_on_what_it_evaluates(sim_store):
    samples = sim_store.sample_training(200, 10, seed=1)
    cutoff = sorted(g.timestamp for s in samples for g in s.targets)[len(samples)]
    train, evals = split_prequential(samples, cutoff)
    assert train and evals
    assert all(g.timestamp < cutoff for s in train for g in s.targets)
    assert all(g.timestamp >= cutoff for s in evals for g in s.targets)
    for s in train + evals:  # every visible turn precedes every target of its sample
        assert max(s.visible.timestamps, default=-1) < min(g.timestamp for g in s.targets)


def test_the_judge_scores_each_fresh_comparison_once_with_the_history_a_router_reads(sim_store, tmp_path):
    """served_evals: one eval sample per comparison at or after the cutoff, none twice, each with every turn
    before it (up to k), where a training sample's later target reads only what came before its random cut."""
    from dataclasses import replace

    cfg = RefreshConfig(window_minutes=1e9, users=100, k=500)
    train, evals, window = RefreshTrainer(sim_store, tmp_path, cfg).sample(seed=0)
    cutoff = window["cutoff_ms"]
    keys = [(g.user_id, g.conversation_id, g.turn) for s in evals for g in s.targets]
    assert evals and all(len(s.targets) == 1 for s in evals) and len(set(keys)) == len(keys)
    assert all(g.timestamp < cutoff for s in train for g in s.targets)
    for s in evals:
        (g,) = s.targets
        assert g.timestamp >= cutoff and max(s.visible.timestamps) < g.timestamp
        every = sim_store.serving_samples([g.user_id], 500, g.timestamp)[0].visible  # as served at that time
        assert len(s.visible) == len(every)
    # the same seed without it: the same training side, and the later targets of those samples
    old_train, old_evals, _ = RefreshTrainer(sim_store, tmp_path, replace(cfg, served_evals=False)).sample(seed=0)
    assert [len(s.targets) for s in old_train] == [len(s.targets) for s in train]
    assert sum(len(s.visible) for s in old_evals) < sum(len(s.visible) for s in evals)


def test_a_cycles_samples_train_on_at_most_max_targets_comparisons_after_their_cut(sim_store, tmp_path):
    """RefreshConfig.max_targets bounds each training sample to the first comparisons after its cut, so a step's
    work does not grow with users' histories; without the bound the same draw holds longer samples."""
    from dataclasses import replace

    cfg = RefreshConfig(window_minutes=1e9, users=100, k=10, max_targets=3, served_evals=False)
    train, evals, _ = RefreshTrainer(sim_store, tmp_path, cfg).sample(seed=0)
    assert train and all(1 <= len(s.targets) <= 3 for s in train + evals)
    assert max(len(s.targets) for s in train) == 3
    for s in train:  # the first comparisons after the cut, in time order
        assert [g.timestamp for g in s.targets] == sorted(g.timestamp for g in s.targets)
    long, _, _ = RefreshTrainer(sim_store, tmp_path, replace(cfg, max_targets=10_000)).sample(seed=0)
    assert max(len(s.targets) for s in long) > 3


def test_a_cycles_targets_carry_crowd_evidence_known_before_the_cutoff(sim_store, tmp_path):
    """Each sampled target gets other users' ratings of its query from the comparisons before the cutoff; its
    own user's are left out (a table without that user gives the same evidence)."""
    import numpy as np

    from trainer.crowd import CrowdTable

    trainer = RefreshTrainer(sim_store, tmp_path, RefreshConfig(window_minutes=1e9, users=100))
    train, evals, window = trainer.sample(seed=0)
    targets = [g for s in train + evals for g in s.targets]
    assert targets and all(g.crowd is not None and g.crowd.shape == (len(g.llm_ids),) for g in targets)
    assert sum(bool(g.crowd.any()) for g in targets) > 0  # the simulator's users share query texts
    samples = train + evals
    for g in [g for g in targets if g.crowd.any()][:20]:
        others = CrowdTable.from_samples([s for s in samples if s.visible.user_id != g.user_id],
                                         before_ms=window["cutoff_ms"])
        np.testing.assert_allclose(g.crowd, others.evidence(g.query_key, g.llm_ids, g.user_id), atol=1e-6)


def _reversed(model):
    worse = copy.deepcopy(model)
    forward = worse.forward
    worse.forward = lambda batch: -forward(batch)  # deliberately bad: every preference reversed
    return worse


def test_counting_serves_until_evidence_then_refuses_and_demotes(sim_store, module_settings):
    from trainer.checkpoint import load_checkpoint
    from trainer.count_scorer import CountScorer
    from workers.models import ModelSource

    cfg = RefreshConfig(window_minutes=1e9, users=100, steps=30, min_pairs=20)
    trainer = RefreshTrainer(sim_store, module_settings.model_dir, cfg)
    source = ModelSource(module_settings.model_dir)  # what a router worker loads
    assert isinstance(source.scorer, CountScorer) and source.scorer.version == "count"  # from the first minute

    first = trainer.run_cycle()
    assert first.serving_version is None and first.window["eval_targets"] > 0
    games = CountScorer.load(module_settings.model_dir).games  # the cycle's recount, logged for new_llms
    assert first.window["llm_games"] == games and len(games) > 1 and min(games.values()) > 0
    assert set(first.verdict["accuracy"]) == {"candidate", "count"} and first.verdict["pairs"] > 0
    assert first.count_metrics["pairs"] == first.candidate_metrics["pairs"]  # judged on the same pairs
    assert first.reason and first.serving_after == (first.candidate_version if first.promoted else "count")
    assert source.refresh()  # the promoted model, or counting with the rates the cycle counted (count.json)
    if first.promoted:
        assert source.scorer.version == first.candidate_version
    else:
        assert isinstance(source.scorer, CountScorer) and source.scorer.pairs > 0

    model = load_checkpoint(trainer.registry.path(first.candidate_version)).model
    bad = trainer.run_cycle(candidate=_reversed(model))
    assert not bad.promoted and "not significantly better than counting" in bad.reason
    assert trainer.registry.current() == (first.candidate_version if first.promoted else None)

    # a serving model that is worse than counting on fresh feedback is demoted
    trainer.registry.promote(bad.candidate_version)
    assert source.refresh() and source.scorer.version == bad.candidate_version
    third = trainer.run_cycle(candidate=_reversed(model), serving=_reversed(model))  # serving: as bad
    assert third.serving_version == bad.candidate_version
    assert not third.promoted and third.demoted and "demoted" in third.reason
    assert trainer.registry.current() is None and third.serving_after == "count"
    assert source.refresh() and isinstance(source.scorer, CountScorer)

    history = trainer.history()
    assert [h["promoted"] for h in history] == [first.promoted, False, False]
    assert [h["demoted"] for h in history] == [False, False, True]


def test_a_cycle_boosts_the_llms_its_serving_model_trained_on_few_games_of(sim_store, tmp_path):
    """The games a cycle logs travel with its checkpoint; the next cycle oversamples the LLMs its serving model had
    fewer than ``new_llm_games`` of (here one, as if registered after it), and none when it trains from scratch."""
    from trainer.checkpoint import load_checkpoint

    trainer = RefreshTrainer(sim_store, tmp_path, RefreshConfig(window_minutes=1e9, users=100, steps=4,
                                                                new_llm_games=1, min_pairs=10**9))  # nothing promoted
    first = trainer.run_cycle()
    assert first.serving_version is None and first.window["boosted"] == []
    games = first.window["llm_games"]
    fresh = max(games, key=games.get)
    model = load_checkpoint(trainer.registry.path(first.candidate_version)).model
    logged = {"window": {"llm_games": {m: g for m, g in games.items() if m != fresh}}}
    serving = trainer.registry.publish(model, promote=True, llm_catalog=sim_store.llm_catalog(), metrics=logged)
    second = trainer.run_cycle(trigger=f"new LLMs: {fresh}")
    assert second.serving_version == serving and second.window["boosted"] == [fresh]
    v = second.verdict  # the judge sets the fresh pairs with the boosted LLM apart (trainer/promotion.py)
    assert v["unlearned_pairs"] > 0 and v["tests"]["candidate_vs_serving_unlearned"]["accuracy_a"] >= 0
    # the serving model stays, so the cycle fits its level offset for the LLM it never learned (trainer/calibration.py)
    from trainer.calibration import load_offsets

    off = second.offsets
    assert set(off["fitted_before_cutoff"]) == {fresh} and off["fresh_pairs"] == v["unlearned_pairs"]
    assert off["written"] and load_offsets(tmp_path, serving) == off["offsets"]
    assert off["fresh_scores"][off["chosen"]] == max(off["fresh_scores"].values())
    assert [h["trigger"] for h in trainer.history()] == ["", f"new LLMs: {fresh}"]  # logged for `train --history`


def test_between_cycles_a_recount_refits_the_offsets_of_an_llm_the_serving_model_never_learned(sim_store, tmp_path):
    """recalibrate: due once the unlearned LLM has enough games and again when they grow, fitted on its comparisons
    as served (only those, in time order); a cycle then judges the serving model with the offsets routers add."""
    from trainer.calibration import RECOUNT_GROWTH, load_offsets, read_offsets, save_offsets
    from trainer.checkpoint import load_checkpoint

    cfg = RefreshConfig(window_minutes=1e9, users=100, steps=4, new_llm_games=1, min_pairs=10**9)  # none promoted
    trainer = RefreshTrainer(sim_store, tmp_path, cfg)
    games = trainer.recount_scorer().games
    assert trainer.recalibrate(games) is None  # counting serves: nothing to offset
    model = load_checkpoint(trainer.registry.path(trainer.run_cycle().candidate_version)).model
    fresh = max(games, key=games.get)
    serving = trainer.registry.publish(model, promote=True, llm_catalog=sim_store.llm_catalog(),
                                       metrics={"llm_games": {m: g for m, g in games.items() if m != fresh}})
    groups, scores = trainer.served_comparisons(model, [fresh])
    assert groups and all(fresh in g.llm_ids for g in groups) and len(scores) == len(groups)
    assert [g.timestamp for g in groups] == sorted(g.timestamp for g in groups)
    every = sim_store.serving_samples([u for u, _ in sim_store.active_users(None)][:100], 10, 0)
    assert len(groups) == sum(fresh in s.targets[0].llm_ids for s in every)

    out = trainer.recalibrate(games)
    assert set(out["fitted_before_cutoff"]) == {fresh} and out["fresh_pairs"] > 0 and out["written"]
    doc = read_offsets(tmp_path)
    assert doc["version"] == serving and doc["source"] == "recount" and doc["games"] == games[fresh]
    assert load_offsets(tmp_path, serving) == out["offsets"] and doc["chosen"] == out["chosen"]
    assert trainer.recalibrate(games) is None  # not due again until its games grow
    assert trainer.recalibrate({**games, fresh: games[fresh] * RECOUNT_GROWTH}) is not None
    from dataclasses import replace

    off = RefreshTrainer(sim_store, tmp_path, replace(cfg, offsets=False))
    assert off.recalibrate({**games, fresh: games[fresh] * 10}) is None

    # the judge scores the serving model as routers serve it: the same model as candidate differs only by them
    save_offsets(tmp_path, serving, {fresh: 8.0}, until_ms=2**62)
    with_offsets = trainer.run_cycle(candidate=model)
    assert with_offsets.serving_metrics["accuracy"] != with_offsets.candidate_metrics["accuracy"]
    (tmp_path / "offsets.json").unlink()
    without = trainer.run_cycle(candidate=model)
    assert without.serving_metrics["accuracy"] == without.candidate_metrics["accuracy"]


def test_recount_refreshes_served_counting_without_training(sim_store, tmp_path):
    from trainer.count_scorer import CountScorer
    from workers.models import ModelSource

    trainer = RefreshTrainer(sim_store, tmp_path, RefreshConfig(window_minutes=1e9, users=100))
    source = ModelSource(tmp_path)
    assert isinstance(source.scorer, CountScorer) and source.scorer.rates == {}  # nothing counted yet: uniform
    pairs = trainer.recount()
    assert pairs > 0
    assert source.refresh() and isinstance(source.scorer, CountScorer) and source.scorer.pairs == pairs
    assert sum(source.scorer.games.values()) == 2 * pairs  # each pairwise game counts for both of its LLMs
    rates = source.scorer.rates
    assert len(set(rates.values())) > 1 and all(0.0 <= r <= 1.0 for r in rates.values())
    assert trainer.registry.list() == [] and trainer.history() == []  # no model trained, no cycle logged


def test_a_router_recounts_the_global_rates_while_counting_serves(tmp_path):
    """The trainer's count.json lags a cycle; the router's own recount from the graph replaces it, and a failed
    read keeps the rates it has."""
    from trainer.count_scorer import CountScorer
    from workers.models import ModelSource

    source = ModelSource(tmp_path, count_source=lambda: {"a": (3.0, 4.0), "b": (1.0, 4.0), "c": (0.0, 0.0)})
    assert isinstance(source.scorer, CountScorer) and source.scorer.rates == {}
    assert source.recount() and source.scorer.rates == {"a": 0.75, "b": 0.25} and source.scorer.pairs == 4

    def down():
        raise ConnectionError("graph down")

    source.count_source = down
    assert not source.recount() and source.scorer.rates == {"a": 0.75, "b": 0.25}
    CountScorer({"a": 0.1}, pairs=1).save(tmp_path)  # the trainer counts: the fresher recount still wins
    assert source.refresh() and source.scorer.rates == {"a": 0.75, "b": 0.25}


def test_the_periodic_trainers_recount_names_an_llm_the_last_cycle_had_not_counted(sim_store, module_settings,
                                                                                   tmp_path):
    """The wiring of the early cycle (trainer/refresh_cli.py): a recount against the real graph reads the last
    cycle's logged games, and names an LLM that has reached ``trainer_new_llm_games`` since."""
    import json

    from trainer.count_scorer import CountScorer
    from trainer.refresh import CYCLES_FILE
    from trainer.refresh_cli import recount

    s = module_settings.model_copy(update={"model_dir": tmp_path, "trainer_window_minutes": 1e9,
                                           "trainer_users": 100})
    pairs, new, _, _ = recount(s)
    assert pairs > 0 and new == []  # no cycle yet: the regular cadence runs the first
    games = CountScorer.load(tmp_path).games
    fresh = max(games, key=games.get)  # as if it had been registered after the last cycle
    last = {"window": {"llm_games": {m: g for m, g in games.items() if m != fresh}}}
    (tmp_path / CYCLES_FILE).write_text(json.dumps(last) + "\n")
    assert recount(s.model_copy(update={"trainer_new_llm_games": int(games[fresh])}))[1] == [fresh]
    assert recount(s.model_copy(update={"trainer_new_llm_games": int(games[fresh]) + 1}))[1] == []
    # a serving model that trained on that many games of it (here: `prefstream fit` on files that had them) has
    # learned it: nothing is due, whatever the last cycle counted
    from trainer.config import GMTRouterConfig
    from trainer.model import GMTRouter
    from trainer.registry import ModelRegistry

    ModelRegistry(tmp_path).publish(GMTRouter(GMTRouterConfig()), promote=True, llm_catalog=sim_store.llm_catalog(),
                                    metrics={"llm_games": games})
    assert recount(s.model_copy(update={"trainer_new_llm_games": int(games[fresh])}))[1] == []


def test_the_live_watch_counts_each_comparison_once_and_demotes_a_model_behind_counting(sim_store, tmp_path):
    """RefreshTrainer.watch on the real graph: off while counting serves; a version starts with every user's newest
    turn as their mark; a check counts each user's comparisons from their mark up to their newest turn (none twice);
    a model that reverses every preference is demoted, and a version promoted again starts afresh."""
    from dataclasses import replace

    from trainer.checkpoint import load_checkpoint
    from trainer.metrics import pairs
    from trainer.watch import WatchState, read_watch, save_watch

    cfg = RefreshConfig(window_minutes=1e9, users=100, steps=4, min_pairs=10**9)  # the cycle promotes nothing
    trainer = RefreshTrainer(sim_store, tmp_path, cfg)
    counting = trainer.recount_scorer()
    assert trainer.watch(counting) is None  # counting serves
    version = trainer.run_cycle().candidate_version
    model = load_checkpoint(trainer.registry.path(version)).model
    trainer.registry.promote(version)
    assert RefreshTrainer(sim_store, tmp_path, replace(cfg, watch=False)).watch(counting) is None
    active = dict(sim_store.active_users(None))
    first = trainer.watch(counting)
    assert first["version"] == version and first["marks"] == {u: t + 1 for u, t in active.items()}
    assert first["checks"] == 0 and first["pairs"] == 0
    assert trainer.watch(counting)["pairs"] == 0  # no user has a turn after their mark

    every = sim_store.serving_samples(list(active), 10, 0)
    stamps = sorted(s.targets[0].timestamp for s in every)
    mid = stamps[len(stamps) // 2]
    expected = sum(len(pairs(s.targets[0])) for s in every
                   if mid <= s.targets[0].timestamp < active[s.visible.user_id])  # each user's newest waits
    save_watch(tmp_path, WatchState(version, marks={u: mid for u in active}))  # as if last read at ``mid``
    patient = RefreshTrainer(sim_store, tmp_path, replace(cfg, alpha=1e-300, users=10**6))  # tallies, never demotes
    state = patient.watch(counting, serving=model)
    assert state["pairs"] == expected > 0 and state["checks"] == 1 and not state["demoted"]
    assert state["wins"] + state["losses"] <= state["pairs"]
    assert state["marks"] == {u: t for u, t in active.items() if t > mid} | {u: mid for u, t in active.items()
                                                                              if t <= mid}
    assert patient.watch(counting, serving=model)["pairs"] == expected  # nothing new: nothing counted twice
    assert trainer.registry.current() == version

    save_watch(tmp_path, WatchState(version))  # no marks: every comparison but each user's newest
    bad = trainer.watch(counting, serving=_reversed(model))
    assert bad["demoted"] and "demoted" in bad["reason"] and bad["losses"] > bad["wins"], bad["reason"]
    assert trainer.registry.current() is None and trainer.watch(counting) is None
    assert read_watch(tmp_path).demoted
    trainer.registry.promote(version)  # promoted again: a fresh tally
    again = trainer.watch(counting)
    assert again["checks"] == 0 and not again["demoted"] and trainer.registry.current() == version


def test_a_cycle_does_not_demote_a_model_the_live_watch_has_ahead_of_counting(sim_store, tmp_path):
    """A cycle's judge finds the serving model significantly behind counting on its fresh pairs; it is demoted only
    when the watch's tally since it began serving has it behind too (or there is no tally)."""
    from trainer.checkpoint import load_checkpoint
    from trainer.watch import WatchState, save_watch

    cfg = RefreshConfig(window_minutes=1e9, users=100, steps=4, min_pairs=20)
    trainer = RefreshTrainer(sim_store, tmp_path, cfg)
    version = trainer.run_cycle().candidate_version
    model = load_checkpoint(trainer.registry.path(version)).model
    trainer.registry.promote(version)
    save_watch(tmp_path, WatchState(version, pairs=100, wins=30, losses=10))
    kept = trainer.run_cycle(candidate=_reversed(model), serving=_reversed(model))
    assert kept.verdict["demote"] and not kept.demoted and "not demoted: the live watch" in kept.reason
    assert trainer.registry.current() == version
    save_watch(tmp_path, WatchState(version, pairs=100, wins=10, losses=30))
    gone = trainer.run_cycle(candidate=_reversed(model), serving=_reversed(model))
    assert gone.demoted and trainer.registry.current() is None


def test_a_cycle_refuses_a_graph_of_another_embedding_space(settings):
    """A cycle trains on the graph's query vectors and labels its candidate with the deployment's encoder space:
    on a graph whose vectors are another space it trains nothing and says why."""
    from graphstore import open_store
    from graphstore.base import EmbeddingSpaceMismatch
    from trainer.refresh_cli import run_cycle

    with open_store(settings) as store:
        store.claim_embedding_space("another-encoder:onnx")
    try:
        with pytest.raises(EmbeddingSpaceMismatch, match="another-encoder:onnx vectors"):
            run_cycle(settings)
        assert not list(settings.model_dir.glob("v*"))  # no candidate was published
    finally:
        with open_store(settings) as store:
            store.clear()


def test_cycles_check_every_active_users_kept_counts_in_turn_and_rebuild_those_that_differ(sim_store, tmp_path):
    """A cycle checks the kept win counts of its slice of the window's users (check_slice: by id, the next slice
    each cycle, so every user in turn) and rebuilds those that differ from the stored ratings on two reads, before
    the count scorer's recount reads them; a user outside the slice waits for their own cycle."""
    from dataclasses import replace

    from graphstore.count_check import check_win_counts
    from tests.graphstore.graphstore_events import raw_write
    from trainer.refresh import check_slice

    users = sorted(u for u, _ in sim_store.active_users(None))
    n = 6
    slices = [check_slice(users, n, c) for c in range(-(-len(users) // n))]
    assert all(len(s) == n for s in slices) and set().union(*slices) == set(users)
    assert check_slice(users, 0, 1) == [] and check_slice(users, len(users) + 1, 3) == users
    assert check_win_counts(sim_store, users).ok
    cfg = RefreshConfig(window_minutes=1e9, users=100, steps=2, min_pairs=10**9, check_users=n)
    counted = RefreshTrainer(sim_store, tmp_path / "clean", cfg).recount_scorer().games

    # a drifted edge sum and a lost share in this cycle's slice, and a drifted edge of a user in the next one
    first, second = slices[0][:2], slices[1][0]
    for uid, more in ((first[0], 2), (second, 0)):  # the second's games stay: the scorer's games count them
        raw_write(sim_store, f"MATCH (:User {{user_id: '{uid}'}})-[k:WIN_COUNT]->(:LLM) WITH k LIMIT 1 "
                             f"SET k.wins = k.wins + 1, k.games = k.games + {more}")
    raw_write(sim_store, f"MATCH (:User {{user_id: '{first[1]}'}})<-[:BY]-(:Turn)<-[:ANSWER_OF]-(r:Response) "
                         "WHERE r.rating IS NOT NULL WITH r LIMIT 1 SET r.pair_wins = null")
    assert [c.user_id for c in check_win_counts(sim_store, users).off] == sorted([*first, second])

    trainer = RefreshTrainer(sim_store, tmp_path, cfg)
    record = trainer.run_cycle()
    counts = record.window["counts"]
    assert record.window["llm_games"] == counted  # the scorer's recount read the rebuilt counts
    assert counts["users"] == n and counts["differed"] == 2 and counts["rebuilt"] == 2
    assert sorted(counts["rebuilt_ids"]) == sorted(first) and counts["still_off"] == []
    assert [c.user_id for c in check_win_counts(sim_store, users).off] == [second]  # not in this cycle's slice
    assert trainer.history()[0]["window"]["counts"] == counts  # logged for `prefstream train --history`
    assert trainer.check_counts(users, 1)["rebuilt_ids"] == [second]  # the next cycle's slice
    assert check_win_counts(sim_store, users).ok
    assert RefreshTrainer(sim_store, tmp_path, replace(cfg, check_users=0)).check_counts(users, 0) == {}


def test_a_cycle_draws_its_cuts_in_the_window_so_it_trains_on_and_judges_recent_feedback(sim_store, tmp_path):
    """RefreshConfig.window_cuts: every sample's targets lie in the window (its cut does), so the prequential cutoff
    is among the window's comparisons; drawn anywhere in the users' histories, as before, some targets lie earlier."""
    from dataclasses import replace

    everyone = sim_store.active_users(None)
    newest, oldest = everyone[0][1], min(t for _, t in everyone)
    minutes = (newest - oldest) / 60_000 / 3  # the newest third of the stream's time
    cfg = RefreshConfig(window_minutes=minutes, users=100, max_targets=10_000, served_evals=False)
    trainer = RefreshTrainer(sim_store, tmp_path, cfg)
    since = trainer.since_ms()
    train, evals, window = trainer.sample(seed=0)
    targets = [g.timestamp for s in train + evals for g in s.targets]
    assert targets and min(targets) >= since and window["cutoff_ms"] >= since
    anywhere, _, _ = RefreshTrainer(sim_store, tmp_path, replace(cfg, window_cuts=False)).sample(seed=0)
    assert min(g.timestamp for s in anywhere for g in s.targets) < since
