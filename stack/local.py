"""`prefstream up` / `down` / `status`: the local stack and the app processes on it.

What ``up`` started is written to ``<run_dir>/stack.json`` (pids, ports, logs); ``down`` stops exactly
those processes and nothing else, so two stacks with different run directories and ports coexist.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable

from prefstream.config import Settings
from prefstream.procs import Proc, alive, port_open, same_process, spawn, stop, wait_healthy
from stack import services
from stack.apps import app_specs


def stack_env(s: Settings) -> dict[str, str]:
    """Environment that points an app process at this stack, with every setting passed through."""
    s = s.model_copy(update={"run_dir": s.run_dir.resolve(), "model_dir": s.model_dir.resolve()})
    return {**s.to_env(), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}


# The local broker keeps every record in memory and enforces no retention; only deleting a topic frees it
# (bench/results/broker_memory.md). So the local stack rotates its route topics (streams/route_topics.py) unless
# PREFSTREAM_ROUTE_GENERATION_S is set; a production Kafka cluster keeps one topic each with retention. Short
# generations, kept route_keep_s: the broker holds route_keep_s plus one generation of requests and replies.
LOCAL_ROUTE_GENERATION_S = 10
# Likewise its turns and feedback topics, which the ingest deletes a generation at a time once read
# (streams/event_topics.py) unless PREFSTREAM_EVENT_GENERATION_S is set: on the local broker, which keeps them in
# memory only, they were never a durable record; the graph (append-only file) is.
LOCAL_EVENT_GENERATION_S = 120
# And its dead-letter topic, by the hour, each hour's topic deleted PREFSTREAM_DEAD_LETTER_RETENTION_MS after it
# closed (streams/dead_letter_topics.py): the retention the local broker does not enforce.
LOCAL_DEAD_LETTER_GENERATION_S = 3600


def local_settings(s: Settings) -> Settings:
    """Settings whose addresses point at the local stack's ports, with the local route-topic generations."""
    update = {
        "kafka_bootstrap": f"127.0.0.1:{s.broker_port}",
        "graph_uri": f"redis://127.0.0.1:{s.graph_port}",
        "ray_address": f"127.0.0.1:{s.ray_port}" if s.start_ray else s.ray_address,
    }
    if "route_generation_s" not in s.model_fields_set and s.router_assignment == "static":
        update["route_generation_s"] = LOCAL_ROUTE_GENERATION_S
    for field, local in (("event_generation_s", LOCAL_EVENT_GENERATION_S),
                         ("dead_letter_generation_s", LOCAL_DEAD_LETTER_GENERATION_S)):
        if field not in s.model_fields_set:
            update[field] = local
    return s.model_copy(update=update)


class Stack:
    def __init__(self, settings: Settings):
        self.s = local_settings(settings)
        self.run_dir = self.s.run_dir
        self.state_file = self.run_dir / "stack.json"
        self.log_dir = self.run_dir / "logs"

    # --- state -----------------------------------------------------------------------------
    def procs(self) -> list[Proc]:
        if not self.state_file.exists():
            return []
        data = json.loads(self.state_file.read_text())
        return [Proc(**p) for p in data["procs"]]

    def _save(self, procs: list[Proc], timings: dict[str, float]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"procs": [p.to_dict() for p in procs], "start_s": timings,
                                   "settings": {"kafka_bootstrap": self.s.kafka_bootstrap,
                                                "graph_uri": self.s.graph_uri,
                                                "ray_address": self.s.ray_address,
                                                "gateway_port": self.s.gateway_port,
                                                "route_generation_s": self.s.route_generation_s,
                                                "event_generation_s": self.s.event_generation_s,
                                                "dead_letter_generation_s": self.s.dead_letter_generation_s}},
                                         indent=2))
        os.replace(tmp, self.state_file)

    def running(self) -> list[Proc]:
        return [p for p in self.procs() if alive(p.pid) and same_process(p)]

    # --- up / down -------------------------------------------------------------------------
    def up(self, apps: bool = True, log: Callable[[str], None] = print) -> dict[str, float]:
        """Start every component, wait until each is healthy, record it; return start seconds."""
        if self.running():
            raise RuntimeError(f"a stack is already running from {self.run_dir}; run `prefstream down` first")
        ports = {"broker": self.s.broker_port, "graph": self.s.graph_port}
        if self.s.start_ray:
            ports |= {f"ray +{i}": self.s.ray_port + i for i in range(services.RAY_PORT_SPAN)}
        busy = [f"{name} port {p}" for name, p in ports.items() if port_open(p)]
        if busy:
            raise RuntimeError(f"already in use: {', '.join(busy)}; choose other ports (--broker-port, "
                               "--graph-port, --ray-port or PREFSTREAM_*_PORT)")
        procs: list[Proc] = []
        timings: dict[str, float] = {}
        t_all = time.monotonic()
        try:
            self._start_servers(procs, timings, apps, log)
        except BaseException:
            for p in reversed(procs):
                stop(p)
            self.state_file.unlink(missing_ok=True)
            raise
        timings["total"] = time.monotonic() - t_all
        self._save(procs, timings)
        return timings

    def _start_servers(self, procs: list[Proc], timings: dict[str, float], apps: bool,
                       log: Callable[[str], None]) -> None:
        """Broker, graph server and Ray start at once. The apps start once the topics exist and the graph
        answers, without waiting for Ray: an app that needs Ray waits for its head while it imports."""
        t = time.monotonic()
        password = self.s.graph_password.get_secret_value() if self.s.graph_password else None
        procs.append(broker := services.start_broker(self.s.broker_port, self.log_dir))
        procs.append(graph := services.start_graph(self.s.graph_port, self.run_dir / "graph", self.log_dir, password,
                                                   self.s.graph_user))
        ray = services.start_ray(self.s.ray_port, self.log_dir) if self.s.start_ray else None
        if ray is not None:
            procs.append(ray)
        self._save(procs, timings)
        services.wait_broker(broker, self.s.kafka_bootstrap)
        from streams.kafka_config import create_topics

        create_topics(self.s)
        timings["broker"] = time.monotonic() - t
        log(f"broker  up  127.0.0.1:{self.s.broker_port}  ({timings['broker']:.2f} s, topics created)")
        services.wait_graph(graph, self.s.graph_port, password=password, user=self.s.graph_user)
        timings["graph"] = time.monotonic() - t
        log(f"graph   up  redis://127.0.0.1:{self.s.graph_port}  ({timings['graph']:.2f} s)")
        started = self._spawn_apps(procs, timings) if apps else []
        if ray is not None:
            services.wait_ray(ray, self.s.ray_port)
            timings["ray"] = time.monotonic() - t
            log(f"ray     up  {self.s.ray_address}  ({timings['ray']:.2f} s)")
        self._wait_apps(started, timings, t, log)

    def _spawn_apps(self, procs: list[Proc], timings: dict[str, float]) -> list:
        """Spawn every app at once (each spends its first seconds importing and loading its models)."""
        env = stack_env(self.s)
        started = []
        for spec in app_specs(self.s):
            proc = spawn(spec.name, [sys.executable, "-m", "stack.cli", *spec.args], self.log_dir, env=env)
            procs.append(proc)
            started.append((spec, proc))
        self._save(procs, timings)
        return started

    def _wait_apps(self, started: list, timings: dict[str, float], t: float, log: Callable[[str], None]) -> None:
        """Wait until each app says it serves; its time counts from the stack's start."""
        for spec, proc in started:
            if spec.healthy is not None:
                wait_healthy(proc, lambda: spec.healthy(self.s, proc), spec.timeout, spec.name)
            timings[spec.name] = time.monotonic() - t
            log(f"{spec.name:<7} up  pid {proc.pid}  ({timings[spec.name]:.2f} s)")

    def down(self, log: Callable[[str], None] = print) -> int:
        """Stop what ``up`` recorded, apps first; return how many were still running."""
        procs = self.procs()
        n = 0
        for p in reversed(procs):
            if alive(p.pid) and same_process(p):
                n += 1
            stop(p)
            log(f"stopped {p.name} (pid {p.pid})")
        self.state_file.unlink(missing_ok=True)
        return n
