"""Router workers as Ray actors on a local Ray cluster, a real broker and a real graph."""

from __future__ import annotations

import pytest
import torch

from streams.client import PrefstreamClient
from streams.kafka_config import create_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_local():
    from prefstream.ray_env import init_ray

    ray = init_ray("local", num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def registry(module_settings):
    from trainer.model import GMTRouter, GMTRouterConfig
    from trainer.registry import ModelRegistry

    torch.manual_seed(0)
    reg = ModelRegistry(module_settings.model_dir)
    reg.publish(GMTRouter(GMTRouterConfig()), promote=True)
    return reg


@pytest.fixture(scope="module")
def workers(ray_local, module_settings, sim_store, registry):
    from workers.ray_workers import start_workers

    create_topics(module_settings)
    actors = start_workers(module_settings.model_copy(update={"router_num_cpus": 0.5}), 2)
    yield actors
    for a in actors:
        try:
            ray_local.get(a.stop.remote(), timeout=20)
        except Exception:
            pass
        ray_local.kill(a)


LONG = 120_000  # these tests are about the model path: deadlines long enough that nothing is shed


def users(small_sim) -> list[str]:
    return [u.user_id for u in small_sim.users]


def test_two_workers_answer_every_request_even_when_one_is_killed(ray_local, workers, module_settings, small_sim,
                                                                    registry):
    ids = users(small_sim)
    with PrefstreamClient(module_settings) as c:
        futs = [c.route_async(ids[i % len(ids)], f"How do I solve problem {i}?", deadline_ms=LONG) for i in range(40)]
        ray_local.kill(workers[0], no_restart=False)  # crash one worker with requests in flight
        futs += [c.route_async(ids[i % len(ids)], f"And what about problem {i}?", deadline_ms=LONG) for i in range(40)]
        decisions = [f.result(timeout=120) for f in futs]
    assert len({d.request_id for d in decisions}) == 80
    assert all(d.error is None and d.chosen_llm_id for d in decisions)
    assert not any(d.shed for d in decisions)
    assert {d.model_version for d in decisions} == {registry.current()}
    assert any(d.turn_ids for d in decisions)  # known users: decisions name the history they used
    statuses = ray_local.get([a.status.remote() for a in workers], timeout=120)  # the killed one was restarted
    assert all(s["alive"] for s in statuses)


def test_workers_hot_swap_to_a_promoted_version(ray_local, workers, module_settings, small_sim, registry):
    from trainer.model import GMTRouter, GMTRouterConfig

    ids = users(small_sim)
    old = registry.current()
    torch.manual_seed(1)
    new = registry.publish(GMTRouter(GMTRouterConfig()), promote=True)
    with PrefstreamClient(module_settings) as c:
        inflight = [c.route_async(ids[i % len(ids)], f"question {i}", deadline_ms=LONG) for i in range(30)]
        assert ray_local.get([a.refresh_model.remote() for a in workers], timeout=120) == [new, new]
        after = [c.route_async(ids[i % len(ids)], f"question {i}", deadline_ms=LONG) for i in range(10)]
        first = [f.result(timeout=120) for f in inflight]
        second = [f.result(timeout=120) for f in after]
    assert all(d.error is None for d in first + second)
    assert {d.model_version for d in first} <= {old, new}  # nothing in flight failed during the swap
    assert {d.model_version for d in second} == {new}
