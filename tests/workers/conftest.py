"""A graph filled with a small simulated history (through the real Ingestor, store and encoder)."""

from __future__ import annotations

import pytest

from streams.ingest import Ingestor, RawMessage


@pytest.fixture(scope="session")
def encoder():
    """The deployment's encoder (the settings' backend), so that routers started on the graph find their own
    vectors there."""
    from prefstream.config import Settings
    from prefstream.encoder import TextEncoder

    return TextEncoder.from_settings(Settings())


@pytest.fixture(scope="session")
def small_sim():
    from trainer.simulate import SimConfig, Simulator

    return Simulator(SimConfig(seed=3, n_users=20, n_new_users=0, turns_min=15, turns_max=25))


def ingest_events(store, encoder, events, batch: int = 500) -> None:
    ing = Ingestor(store, encoder, unknown_llm_grace_s=0)
    by_type = {"llm_registered": ing.llms, "chat_turn": ing.turns, "feedback": ing.feedback}
    for kind in ("llm_registered", "chat_turn", "feedback"):
        msgs = [RawMessage(e.to_bytes(), kind) for e in events if e.type == kind]
        for i in range(0, len(msgs), batch):
            result = by_type[kind](msgs[i:i + batch])
            assert not result.dead, result.dead[:3]


@pytest.fixture(scope="module")
def sim_store(module_settings, encoder, small_sim):
    from graphstore import open_store

    store = open_store(module_settings)
    store.ensure_schema()
    store.claim_embedding_space(encoder.space, encoder.encode)  # as build_ingestor does
    ingest_events(store, encoder, small_sim.events())
    yield store
    store.clear()
    store.close()
