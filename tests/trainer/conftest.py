"""Tiny simulated data with synthetic embeddings (task centroid + noise), so tests never load the encoder."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from trainer.simulate import SimConfig, Simulator

D = 32
torch.set_num_threads(1)  # the CI box has 2 shared cores: oversubscribed BLAS threads only slow tests down


def synthetic_embeddings(sim: Simulator, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_t = len(sim.data.task_names)
    centroids = rng.normal(size=(n_t, D))
    q = centroids[sim.data.tasks] + 0.5 * rng.normal(size=(len(sim.data.queries), D))
    m = rng.normal(size=(len(sim.data.llm_ids), D))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    return q.astype(np.float32), m.astype(np.float32)


@pytest.fixture(scope="session")
def tiny_sim() -> Simulator:
    return Simulator(SimConfig(seed=3, n_users=30, n_new_users=6, turns_min=30, turns_max=40))


@pytest.fixture(scope="session")
def tiny_ds(tiny_sim):
    q, m = synthetic_embeddings(tiny_sim)
    return tiny_sim.dataset(query_emb=q, llm_emb=m)


@pytest.fixture
def race():
    """``race(*fns)``: run the callables in threads released together by a barrier, and wait for all of them."""
    def run(*fns) -> None:
        start = threading.Barrier(len(fns))

        def released(fn) -> None:
            start.wait()
            fn()

        threads = [threading.Thread(target=released, args=(fn,)) for fn in fns]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    return run
