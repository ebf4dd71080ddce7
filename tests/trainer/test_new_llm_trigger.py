"""The periodic trainer refreshes early for a new LLM: the count-based scorer keeps each LLM's games, a cycle logs
them, and an LLM that reached the threshold only after the last cycle is due."""

from __future__ import annotations

import json

from trainer.count_scorer import RATES_FILE, CountScorer
from trainer.refresh import new_llms


def test_the_counted_games_survive_the_rates_file(tmp_path):
    counted = CountScorer.from_counts({"a": (3.0, 4.0), "b": (1.0, 4.0), "c": (0.0, 0.0)})
    assert counted.games == {"a": 4.0, "b": 4.0, "c": 0.0} and counted.pairs == 4
    counted.save(tmp_path)
    assert CountScorer.load(tmp_path).games == counted.games
    (tmp_path / RATES_FILE).write_text(json.dumps({"rates": {"a": 0.5}, "pairs": 3}))  # written before games
    assert CountScorer.load(tmp_path).games == {} and CountScorer.load(tmp_path).rates == {"a": 0.5}


def test_an_llm_that_reached_the_threshold_after_the_last_cycle_is_due():
    last = {"window": {"llm_games": {"a": 900.0, "b": 150.0}}}  # new was not counted at all then
    now = {"a": 950.0, "b": 260.0, "new": 200.0, "newer": 199.0}
    assert new_llms(now, last, 200) == ["b", "new"]  # b and new crossed 200 since; newer has not yet
    assert new_llms(now, {"window": {"llm_games": now}}, 200) == []  # the last cycle had them: not due again
    # b crossed 200 only in this stream, but the serving model trained on 6,000 games of it (a shipped model):
    # only the LLM it has not learned is due
    assert new_llms(now, last, 200, seen={"a": 6000.0, "b": 6000.0}) == ["new"]


def test_no_early_cycle_before_the_first_or_after_a_cycle_that_logged_no_counts():
    now = {"a": 500.0}
    assert new_llms(now, None, 200) == []  # the regular cadence runs the first cycle
    assert new_llms(now, {"window": {"train_targets": 10}}, 200) == []  # a record from before llm_games


def _sample(llms: list[str]):
    import numpy as np

    from graphstore.schema import HeldOutGroup, TrainingSample, UserSubgraph

    g = HeldOutGroup("u", "q", np.zeros(4, np.float32), llms, np.array([1.0, 0.0], np.float32), 0)
    return TrainingSample(UserSubgraph("u"), [g])


def test_a_cycle_oversamples_the_comparisons_of_an_llm_it_has_not_learned():
    from trainer.refresh import boosted

    old = [_sample(["a", "b"]) for _ in range(90)]
    new = [_sample(["a", "x"]) for _ in range(5)]
    train = old + new
    out = boosted(train, ["x"], 0.1)
    assert out[: len(train)] == train  # nothing dropped, the order kept (refit validates on the first fifth)
    extra = out[len(train):]
    assert extra and all(any(s is n for n in new) for s in extra)  # only the new LLM's samples repeat
    share = sum(1 for s in out if "x" in s.targets[0].llm_ids) / len(out)
    assert 0.1 <= share < 0.15  # ceil(0.1 * 90 / (0.9 * 5)) = 2 copies each: 10 of 100
    assert boosted(train, [], 0.1) is train and boosted(train, ["y"], 0.1) is train  # nothing to boost
    assert len(boosted(new, ["x"], 0.1)) == len(new)  # every sample compares it: nothing to repeat
    few = old + new[:2]  # 0.1 of the list would take 5 copies of each; 45 for half of it: the cap holds at 10
    assert len(boosted(few, ["x"], 0.5)) == len(few) + 2 * 9 and len(boosted(few, ["x"], 0.5, max_copies=3)) == 96


def test_the_llms_a_serving_model_trained_on_few_games_of_are_unlearned():
    from types import SimpleNamespace

    from trainer.refresh import seen_games, unlearned

    cycle_model = SimpleNamespace(metrics={"window": {"llm_games": {"a": 900.0, "b": 150.0}}}, llm_catalog={"a": 0})
    assert unlearned({"a": 950.0, "b": 400.0, "x": 30.0, "idle": 0.0}, seen_games(cycle_model), 200) == ["b", "x"]
    offline = SimpleNamespace(metrics={"validation": {}}, llm_catalog={"a": 0, "b": 0})  # `prefstream fit` on files
    assert unlearned({"a": 5.0, "b": 5.0, "x": 30.0}, seen_games(offline), 200) == ["x"]


def test_a_model_fitted_on_files_logs_its_games_and_an_llm_with_none_is_unlearned():
    import numpy as np
    from types import SimpleNamespace

    from graphstore.schema import HeldOutGroup, TrainingSample, UserSubgraph
    from trainer.refresh import seen_games, trained_games, unlearned

    def sample(t: int, llms: list[str], ratings: list[float]):
        g = HeldOutGroup("u", "q", np.zeros(4, np.float32), llms, np.array(ratings, np.float32), t)
        return TrainingSample(UserSubgraph("u"), [g])

    train = [sample(t, ["a", "b"], [1.0, 0.0]) for t in range(5)] + [sample(9, ["a", "b", "c"], [1.0, 0.5, 0.0])]
    train.append(sample(9, ["a", "b", "c"], [1.0, 0.5, 0.0]))  # the same comparison again: counted once
    games = trained_games(train)
    assert games == {"a": 7.0, "b": 7.0, "c": 2.0}
    # the catalog names x, which no training answer has: fit logs no games of it, so a cycle oversamples it
    fitted = SimpleNamespace(metrics={"auc": 0.8, "llm_games": games}, llm_catalog={"a": 0, "b": 0, "c": 0, "x": 0})
    assert unlearned({"a": 5.0, "c": 5.0, "x": 30.0}, seen_games(fitted), 5) == ["c", "x"]
    # continued from a model (fit --init): its games add to the new ones
    assert trained_games(train[:1], fitted) == {"a": 8.0, "b": 8.0, "c": 2.0}


def test_the_periodic_trainer_says_why_a_cycle_runs():
    from prefstream.config import Settings
    from trainer.refresh_cli import cycle_trigger

    s = Settings(trainer_after_feedback=1000, trainer_every_minutes=15)
    assert cycle_trigger(s, ["x", "y"], 10, 60.0) == "new LLMs: x, y"  # first: it is the early one
    assert cycle_trigger(s, [], 1000, 60.0) == "feedback"
    assert cycle_trigger(s, [], 999, 15 * 60.0) == "schedule"
    assert cycle_trigger(s, [], 999, 15 * 60.0 - 1) == ""


def test_the_periodic_trainer_runs_one_cycle_at_a_time_and_recounts_while_it_runs():
    from prefstream.config import Settings
    from trainer.refresh_cli import Cadence

    s = Settings(trainer_after_feedback=1000, trainer_count_after_feedback=50, trainer_every_minutes=15)
    c = Cadence()
    assert c.poll(s, 0, 1000.0) == ("", "")  # nothing to learn from yet
    assert c.poll(s, 10, 1001.0) == ("cycle", "schedule")  # the first cycle
    assert c.poll(s, 2000, 1002.0) == ("recount", "")  # no second cycle while it runs; recounts go on...
    c.found(["x"])
    assert c.new == []  # ...but their new LLMs wait: the running cycle counts them itself
    assert c.poll(s, 2049, 1003.0) == ("", "")
    c.finished(1100.0)
    assert c.poll(s, 2049, 1101.0) == ("cycle", "feedback")  # 1000 events since the first cycle began
    c.finished(1200.0)
    assert c.poll(s, 2099, 1201.0) == ("recount", "")
    c.found(["x"])
    assert c.poll(s, 2100, 1202.0) == ("cycle", "new LLMs: x")


def test_the_last_cycle_is_read_from_the_end_of_the_file(tmp_path):
    from trainer.refresh import CYCLES_FILE, RefreshTrainer

    trainer = RefreshTrainer(None, tmp_path)
    assert trainer.last_cycle() is None  # no cycle yet
    records = [{"n": 0}, {"n": 1, "pad": "x" * 300_000}, {"n": 2, "pad": "y" * 100_000}]  # longer than one read
    (tmp_path / CYCLES_FILE).write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")
    assert trainer.last_cycle() == trainer.history()[-1] == records[-1]
    (tmp_path / CYCLES_FILE).write_text(json.dumps(records[0]) + "\n")
    assert trainer.last_cycle() == records[0]
