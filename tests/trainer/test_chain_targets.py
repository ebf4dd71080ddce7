"""A training sample's later targets read its earlier targets as their conversation's previous turns."""

from __future__ import annotations

import numpy as np

from graphstore.schema import HeldOutGroup
from trainer.config import TrainConfig
from trainer.train import chain_conversations, make_batch
from tests.trainer.test_monotone import LLMS, QUERIES, _catalog, _history


def _target(conv: str, turn: int, llms: list[int], ratings: list[float], q: int = 0) -> HeldOutGroup:
    return HeldOutGroup("u", f"q{q}", QUERIES[q], [LLMS[m] for m in llms], np.array(ratings, np.float32),
                        1000 + turn, conv, turn)


def test_later_targets_read_earlier_targets_of_their_conversation():
    # visible: turn 1 of conversation c0 (m0 beat m1); targets: c0 turns 2 and 3, then a new conversation c9
    sub = _history([(0, [0, 1], [1.0, 0.0])])
    targets = [[_target("c0", 2, [0, 1], [0.0, 1.0]),  # its previous turn is visible: m0 +0.5, m1 -0.5
                _target("c0", 3, [1, 2, 0], [1.0, 0.0, float("nan")]),  # previous turn: the target above
                _target("c9", 1, [0, 1], [1.0, 0.0]),  # no earlier turn anywhere
                _target("c0", 4, [2, 1], [0.5, 0.5])]]  # previous turn: the second target (m0 was unrated there)
    b = make_batch([sub], targets, _catalog(), reverse_edges=False)
    before = b.conv_prev.clone().numpy()
    got = chain_conversations(b, targets).conv_prev.numpy()
    np.testing.assert_allclose(before[:2], [0.5, -0.5])  # read from the visible history
    np.testing.assert_allclose(got[:2], before[:2])  # and left as it is
    # the second target: the first target's centered ratings (m1 beat m0; m2 did not answer it)
    np.testing.assert_allclose(got[2:5], [0.5, 0.0, -0.5])
    np.testing.assert_allclose(before[2:5], [-0.5, 0.0, 0.5])  # without chaining: the older visible turn 1
    np.testing.assert_allclose(got[5:7], 0.0)  # a conversation of its own: nothing to read
    # the fourth target: the second target (m1 +0.5; m2 -0.5; m0 was unrated there)
    np.testing.assert_allclose(got[7:9], [-0.5, 0.5])


def test_a_single_rated_answer_gives_no_evidence():
    targets = [[_target("c0", 1, [0, 1], [1.0, float("nan")]), _target("c0", 2, [0, 1], [1.0, 0.0])]]
    b = make_batch([_history([])], targets, _catalog(), reverse_edges=False)
    np.testing.assert_allclose(chain_conversations(b, targets).conv_prev.numpy(), 0.0)


def test_training_chains_by_default_and_older_configs_read_back_as_trained():
    assert TrainConfig().chain_targets  # the training every served request matches
    d = TrainConfig().to_dict()
    assert TrainConfig.from_dict(d).chain_targets
    del d["chain_targets"]  # a config written before the field existed was trained without chaining
    assert not TrainConfig.from_dict(d).chain_targets
