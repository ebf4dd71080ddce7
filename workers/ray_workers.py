"""Router workers as Ray actors.

Each actor runs the same RouteLoop as the in-process router; partitions of ``route.requests`` are the unit of
scale. By default (``router_assignment=static``) actor i of n reads the partitions p with p % n == i and commits
to the group: no rebalance. Ray restarts a dead actor with the same index, which resumes from the committed
offsets, so every request is still answered (after the restart). With ``router_assignment=group`` Kafka's group
protocol spreads the partitions instead and hands a dead actor's to the survivors.
"""

from __future__ import annotations

import logging
import threading
import time

from prefstream.config import Settings
from prefstream.ray_env import init_ray

log = logging.getLogger(__name__)


class RouterWorker:
    """One router: engine (graph reads, encoder, hot-swapped scorer) + Kafka loop, in a thread."""

    def __init__(self, s: Settings, index: int, count: int = 1):
        from streams.route_loop import RouteLoop
        from workers.build import build_engine

        from prefstream.metrics import metrics_port_for, serve_metrics

        self.index = index
        self.metrics_port = serve_metrics(metrics_port_for(s.metrics_port, "router", index))
        self.engine = build_engine(s)
        self.loop = RouteLoop(s, self.engine, client_id=f"router-{index}", member=(index, count))
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self.loop.run, args=(self._ready,), daemon=True, name="route-loop")
        self._thread.start()
        self._ready.wait(timeout=60)

    def status(self) -> dict:
        scorer = self.engine.models.scorer
        return {"index": self.index, "handled": self.loop.handled, "alive": self._thread.is_alive(),
                "model_version": getattr(scorer, "version", None)}

    def refresh_model(self) -> str | None:
        """Check the registry now instead of at the next poll; returns the version serving."""
        self.engine.models.refresh()
        return getattr(self.engine.models.scorer, "version", None)

    def stop(self) -> None:
        self.loop.stop()
        self._thread.join(timeout=10)


def start_workers(s: Settings, n: int) -> list:
    """Start ``n`` router actors on the Ray cluster at ``s.ray_address``; return their handles."""
    ray = init_ray(s.ray_address)
    remote = ray.remote(RouterWorker).options(num_cpus=s.router_num_cpus, num_gpus=s.router_num_gpus,
                                              max_restarts=-1, max_task_retries=-1)
    actors = [remote.remote(s, i, n) for i in range(n)]
    ray.get([a.status.remote() for a in actors], timeout=300)
    return actors


def serve_with_ray(s: Settings, n: int, on_ready=None) -> None:
    """Run ``n`` workers until interrupted, logging their status."""
    import ray

    actors = start_workers(s, n)
    if on_ready is not None:
        on_ready()
    try:
        while True:
            time.sleep(10)
            try:
                log.info("workers: %s", ray.get([a.status.remote() for a in actors], timeout=30))
            except Exception as exc:  # a restarting actor answers later
                log.warning("status: %s", exc)
    except KeyboardInterrupt:
        pass
    finally:
        stop_workers(actors, kill=False)


def stop_workers(actors: list, kill: bool = True, timeout_s: float = 15) -> None:
    """Stop each actor's loop (its last batch settled); with ``kill``, end the actor too. Empties ``actors``."""
    import ray

    for a in actors:
        try:
            ray.get(a.stop.remote(), timeout=timeout_s)
        except Exception:
            pass
        if kill:
            try:
                ray.kill(a)
            except Exception:
                pass
    actors.clear()
