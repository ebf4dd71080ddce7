from pathlib import Path

import numpy as np

from trainer.data import read_arena, read_gmtrouter, read_mtbench, read_prism, write_gmtrouter

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
