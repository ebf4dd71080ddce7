"""bench/new_llm.py's pieces: the held-out LLM leaves training and validation only, and its pairs are told apart."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.new_llm import compare, filtered_copy, pair_table
from graphstore.schema import HeldOutGroup


def _line(user: str, model: str) -> str:
    return json.dumps({"question_id": f"{user}-c0", "turn": 1, "judge": user, "model": model,
                       "conversation": [{"query": "q", "response": "r", "rating": 1.0}], "tstamp": 1})


def test_the_held_out_llm_leaves_train_and_valid_but_not_test(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for split in ("train", "valid", "test"):
        (src / f"{split}.jsonl").write_text("".join(_line(u, m) + "\n" for u in ("a", "b") for m in ("x", "y", "z")))
    (src / "llm_catalog.json").write_text("{}")
    out = filtered_copy(src, tmp_path / "out", "y")
    for split in ("train", "valid"):
        models = [json.loads(line)["model"] for line in (out / f"{split}.jsonl").read_text().splitlines()]
        assert models == ["x", "z", "x", "z"]
    assert (out / "test.jsonl").read_text() == (src / "test.jsonl").read_text()
    assert (out / "llm_catalog.json").exists()


def test_pairs_involving_the_llm_are_flagged_and_methods_must_share_pairs():
    g = HeldOutGroup("u", "q", np.zeros(4, np.float32), ["x", "y", "z"], np.array([1.0, 0.0, 0.5], np.float32), 0)
    t = pair_table([g], [np.array([3.0, 1.0, 2.0])], "y")
    assert t["involves"].tolist() == [True, False, True]  # (x, y), (x, z), (y, z) in id order
    assert t["correct"].tolist() == [1.0, 1.0, 1.0] and t["users"].tolist() == ["u"] * 3
    other = dict(t, users=np.array(["v"] * 3))
    with pytest.raises(ValueError, match="different test pairs"):
        compare(t, other, np.ones(3, bool))


def test_a_refresh_trains_on_the_test_answers_before_its_time_and_is_tested_after_it(tmp_path):
    from bench.new_llm_refresh import refresh_layout

    src = tmp_path / "filtered"
    src.mkdir()
    stamped = [json.loads(_line(u, m)) for u in ("a", "b") for m in ("x", "z")]
    for i, d in enumerate(stamped):
        d["tstamp"] = 10 * (i + 1)  # 10, 20, 30, 40: the median is 25
    (src / "train.jsonl").write_text(_line("a", "x") + "\n")
    (src / "valid.jsonl").write_text(_line("b", "z") + "\n")
    (src / "test.jsonl").write_text("".join(json.dumps(d) + "\n" for d in stamped))
    (src / "llm_catalog.json").write_text("{}")
    out, cut = refresh_layout(src, tmp_path / "refresh")
    read = lambda name: [json.loads(line) for line in (out / name).read_text().splitlines()]  # noqa: E731
    assert cut == 25
    assert [d["tstamp"] for d in read("train.jsonl")] == [1, 10, 20]  # the training answers, then the early test
    assert [d["tstamp"] for d in read("test.jsonl")] == [30, 40]
    assert (out / "valid.jsonl").read_text() == (src / "valid.jsonl").read_text()


def test_games_are_counted_as_the_recount_counts_them_and_give_the_refresh_time(tmp_path):
    from bench.new_llm_refresh import games_by_time, time_of_games

    rows = [("a", "x", 10), ("a", "y", 10), ("a", "z", 10),  # one comparison of three: y plays 2 games at 10
            ("b", "x", 20), ("b", "z", 20),  # y absent: still 2
            ("b", "y", 30), ("b", "x", 30)]  # a comparison of two: 3 at 30
    lines = []
    for user, model, ts in rows:
        d = json.loads(_line(user, model))
        d["question_id"], d["tstamp"] = f"{user}-{ts}", ts
        lines.append(json.dumps(d) + "\n")
    (tmp_path / "test.jsonl").write_text("".join(lines))
    times, games = games_by_time(tmp_path / "test.jsonl", "y")
    assert times.tolist() == [10, 20, 30] and games.tolist() == [2.0, 2.0, 3.0]
    assert time_of_games(times, games, 1) == 11  # just after the comparison that reached it: it trains on it
    assert time_of_games(times, games, 3) == 31
    assert time_of_games(times, games, 4) is None
