import dataclasses
import json

import numpy as np
import pytest

from prefstream.events import ChatTurn, Feedback, LLMRegistered, parse_any
from trainer.data import read_gmtrouter
from trainer.families import write_benchmark
from trainer.simulate import DrawMismatch, SimConfig, Simulator


def test_seeded_and_split_by_time(tiny_sim):
    again = Simulator(SimConfig(seed=3, n_users=30, n_new_users=6, turns_min=30, turns_max=40), data=tiny_sim.data)
    assert [(g.user_id, g.query_idx, g.ratings) for g in again.history[:50]] == \
        [(g.user_id, g.query_idx, g.ratings) for g in tiny_sim.history[:50]]
    by_user = {}
    for g in tiny_sim.history:
        by_user.setdefault(g.user_id, []).append(g)
    order = {"train": 0, "valid": 1, "test": 2}
    for user, gs in by_user.items():
        splits = [order[g.split] for g in sorted(gs, key=lambda g: g.timestamp)]
        assert splits == sorted(splits)  # train, then valid, then test
        if user.startswith("new"):
            assert set(splits) == {2}
    unseen = set(tiny_sim.unseen_queries.tolist())
    assert all(g.query_idx not in unseen for g in tiny_sim.history if g.split != "test")


def test_users_differ(tiny_sim):
    """Different users prefer different LLMs for the same query (else a global router would suffice)."""
    q = int(tiny_sim.history[0].query_idx)
    best = {int(np.argmax(tiny_sim.utility(u, q, 0.0))) for u in tiny_sim.users}
    assert len(best) >= 3


def test_gmtrouter_files_and_events(tmp_path, tiny_sim):
    paths = tiny_sim.write_gmtrouter(tmp_path)
    n = sum(len(g.llm_idx) for g in tiny_sim.history if g.split == "train")
    assert sum(1 for _ in open(paths["train"])) == n
    groups = read_gmtrouter(paths["train"], "train")
    assert len(groups) == sum(g.split == "train" for g in tiny_sim.history)
    assert set(json.loads(paths["catalog"].read_text())) == set(tiny_sim.data.llm_ids)
    count = tiny_sim.write_events(tmp_path / "ev.jsonl")
    evs = [parse_any(line) for line in open(tmp_path / "ev.jsonl")]
    assert len(evs) == count
    assert all(isinstance(e, LLMRegistered) for e in evs[:len(tiny_sim.data.llm_ids)])
    ts = [e.timestamp for e in evs[len(tiny_sim.data.llm_ids):]]
    assert ts == sorted(ts)
    turns = {e.event_id for e in evs if isinstance(e, ChatTurn)}
    fbs = [e for e in evs if isinstance(e, Feedback)]
    assert fbs and all(f.turn_id in turns for f in fbs)
    assert {f.signal.kind for f in fbs} == {"pairwise", "score", "thumbs"}


def test_new_request_has_true_utilities(tiny_sim):
    rng = np.random.default_rng(0)
    r = tiny_sim.new_request("u0001", rng)
    assert r.utility.shape == (len(tiny_sim.data.llm_ids),)
    assert r.query == tiny_sim.data.queries[r.query_idx]
    assert 0 <= r.best_llm < len(tiny_sim.data.llm_ids)


def test_ceilings_are_ordered(tiny_sim):
    c = tiny_sim.ceilings("test")
    assert 0.5 < c["no_correctness"] <= c["noiseless"] <= 1.0
    assert c["task_correctness"] <= c["noiseless"]


def test_style_seed_draws_the_llms_styles_of_another_seed_and_keeps_the_users():
    import numpy as np

    from trainer.simulate import SimConfig, Simulator

    data = Simulator(SimConfig(seed=0, n_users=3, n_new_users=0)).data
    mixed = Simulator(SimConfig(seed=2, style_seed=0, n_users=3, n_new_users=0), data=data)
    world = Simulator(SimConfig(seed=0, n_users=3, n_new_users=0), data=data)
    users = Simulator(SimConfig(seed=2, n_users=3, n_new_users=0), data=data)
    np.testing.assert_array_equal(mixed.llm_style, world.llm_style)
    assert not np.array_equal(users.llm_style, world.llm_style)
    for a, b in zip(mixed.users, users.users):
        np.testing.assert_array_equal(a.style0, b.style0)
        assert (a.quality_w, a.noise, a.n_turns) == (b.quality_w, b.noise, b.n_turns)


def test_a_folder_holds_one_draw(tmp_path, tiny_sim):
    """Files are written once per draw, stamped last; a folder holding another draw's files, or unstamped ones
    (written before stamps, or cut short), is refused by name instead of being trained on."""
    folder = tmp_path / "draw"
    assert not tiny_sim.holds_draw(folder)
    paths = tiny_sim.write_gmtrouter(folder)
    assert json.loads(paths["draw"].read_text()) == tiny_sim.draw()
    assert tiny_sim.holds_draw(folder)
    again = Simulator(dataclasses.replace(tiny_sim.config), data=tiny_sim.data)
    assert again.holds_draw(folder)  # the same knobs: the same files
    other = Simulator(dataclasses.replace(tiny_sim.config, seed=4), data=tiny_sim.data)
    with pytest.raises(DrawMismatch, match=r"'seed': \(3, 4\)"):
        other.holds_draw(folder)
    smaller = Simulator(dataclasses.replace(tiny_sim.config, n_users=29), data=tiny_sim.data)
    with pytest.raises(DrawMismatch, match="n_users"):
        smaller.holds_draw(folder)
    paths["draw"].unlink()
    with pytest.raises(DrawMismatch, match="no draw.json"):
        tiny_sim.holds_draw(folder)


def test_write_benchmark_writes_once_and_refuses_another_generator(tmp_path):
    sizes = {"n_users": 12, "n_new_users": 6, "turns_min": 6, "turns_max": 10}
    folder = tmp_path / "fam"
    write_benchmark("families", folder, 1, **sizes)
    assert json.loads((folder / "users.json").read_text())  # the families' own file is there before the stamp
    stamp = (folder / "draw.json").stat().st_mtime_ns
    sim = write_benchmark("families", folder, 1, **sizes)  # the same draw: nothing rewritten
    assert (folder / "draw.json").stat().st_mtime_ns == stamp and sim.config.seed == 1
    with pytest.raises(DrawMismatch, match="generator"):
        write_benchmark("default", folder, 1, **sizes)
