import json
from pathlib import Path

import numpy as np
import pytest

from trainer.data import (LINE_ORDER_MIXED, load_dataset, read_arena, read_gmtrouter, read_mtbench, read_prism,
                          stamp_counts, time_source, write_gmtrouter)

FIX = Path(__file__).parent / "fixtures"


def test_gmtrouter_groups_and_normalization():
    gs = {(g.conversation_id, g.turn, g.user_id): g for g in read_gmtrouter(FIX / "gmtrouter.jsonl", "train")}
    assert set(gs) == {("q1", 1, "alice"), ("q1", 2, "alice"), ("q2", 1, "bob")}
    g = gs[("q1", 1, "alice")]
    assert g.llm_ids == ["gpt-4", "vicuna-13b"]
    np.testing.assert_allclose(g.ratings, [(9 - 1) / 9, (3 - 1) / 9], rtol=1e-6)  # 1..10 min-max to [0, 1]
    assert gs[("q1", 2, "alice")].query == "And times 3?"
    assert gs[("q1", 2, "alice")].timestamp == 1_700_000_100_000
    assert gs[("q2", 1, "bob")].llm_ids == ["gpt-4", "claude-v1"]  # the unrated answer is dropped
    assert not gs[("q1", 2, "alice")].has_pairs and gs[("q2", 1, "bob")].has_pairs


def test_arena_loader():
    gs = read_arena(FIX / "arena.json")
    assert len(gs) == 3  # same-model record skipped
    assert gs[0].user_id == "arena_user_973" and gs[0].llm_ids == ["chatglm-6b", "koala-13b"]
    assert gs[0].ratings.tolist() == [0.0, 1.0]
    assert gs[1].ratings.tolist() == [0.5, 0.5]
    assert gs[2].query == "Fuji vs. Nikon, which is better?\nand for video?"
    assert gs[0].timestamp == 1682351591132


def test_mtbench_loader_picks_the_judged_turn():
    gs = read_mtbench(FIX / "mtbench.jsonl", "train")
    assert [g.turn for g in gs] == [1, 2, 1]
    assert gs[1].query.startswith("Rewrite your previous response")
    assert gs[0].ratings.tolist() == [0.0, 1.0]
    assert gs[0].timestamp < gs[1].timestamp < gs[2].timestamp  # file order stands in for time


def test_prism_loader():
    gs = read_prism(FIX / "prism.jsonl")
    assert len(gs) == 3
    first = gs[0]
    assert first.user_id == "user0" and first.turn == 1
    assert first.llm_ids == ["gpt-4", "command", "llama-2-7b-chat"]
    np.testing.assert_allclose(first.ratings, np.array([79, 39, 9]) / 99, rtol=1e-6)
    assert gs[1].query == "Why does it depend?" and gs[1].llm_ids == ["gpt-4", "gpt-3.5-turbo"]
    assert not gs[2].has_pairs  # a tie


def test_roundtrip_through_gmtrouter_format(tmp_path):
    src = read_prism(FIX / "prism.jsonl", "train")
    write_gmtrouter(src, tmp_path / "p.jsonl")
    back = read_gmtrouter(tmp_path / "p.jsonl", "train")
    assert sorted((g.user_id, g.query, tuple(g.llm_ids)) for g in back) == \
        sorted((g.user_id, g.query, tuple(g.llm_ids)) for g in src)


def _gmtrouter_line(user: str, conv: str, model: str, rating: float, **extra) -> str:
    return json.dumps({"question_id": conv, "turn": 1, "judge": user, "model": model,
                       "conversation": [{"query": f"q {conv}", "response": "r", "rating": rating}], **extra}) + "\n"


def test_files_without_time_stamps_are_read_in_line_order(tmp_path):
    lines = [_gmtrouter_line("u", f"c{i}", m, r) for i in (2, 0, 1) for m, r in (("a", 1.0), ("b", 0.0))]
    (tmp_path / "test.jsonl").write_text("".join(lines))
    gs = read_gmtrouter(tmp_path / "test.jsonl", "test")
    assert [g.conversation_id for g in sorted(gs, key=lambda g: g.timestamp)] == ["c2", "c0", "c1"]
    assert not any(g.stamped for g in gs)
    assert time_source(gs) == "line order"
    write_gmtrouter(gs, tmp_path / "back.jsonl")  # an ordinal is not written back as a time stamp
    assert all("tstamp" not in json.loads(line) for line in (tmp_path / "back.jsonl").read_text().splitlines())
    fixture = read_gmtrouter(FIX / "gmtrouter.jsonl", "train")  # alice's lines have stamps, bob's have none
    assert time_source([g for g in fixture if g.user_id == "alice"]) == "file"
    assert time_source(fixture) == "mixed" and stamp_counts(fixture) == "train: 1 without, train: 2 with"


def test_files_mixing_stamped_and_unstamped_comparisons_are_read_in_line_order(tmp_path, capsys):
    """An ordinal (a line without a stamp) cannot be placed among epoch times: every file is then read in line
    order, with a warning, so the test comparison still comes after the training one."""
    (tmp_path / "train.jsonl").write_text("".join(_gmtrouter_line("u", "c0", m, r, tstamp=1_700_000_000)
                                                  for m, r in (("a", 1.0), ("b", 0.0))))
    (tmp_path / "test.jsonl").write_text("".join(_gmtrouter_line("u", "c1", m, r) for m, r in (("a", 0.0), ("b", 1.0))))
    files = {"train": tmp_path / "train.jsonl", "test": tmp_path / "test.jsonl"}
    unmixed = read_gmtrouter(files["train"], "train") + read_gmtrouter(files["test"], "test")
    assert min(g.timestamp for g in unmixed if g.split == "train") > max(g.timestamp for g in unmixed
                                                                        if g.split == "test")  # as read: backwards
    ds = load_dataset(files, progress=False)
    assert "(test: 1 without, train: 1 with)" in capsys.readouterr().err
    assert ds.time == LINE_ORDER_MIXED
    assert [g.split for g in ds.groups] == ["train", "test"]  # time order: the training comparison first
    assert not any(g.stamped for g in ds.groups)
