"""`up` starts real components and `down` stops exactly those, leaving no stray process."""

from __future__ import annotations

import pytest

from prefstream.config import Settings
from prefstream.procs import alive, free_port, free_port_span, group_pids, port_open
from stack.services import RAY_PORT_SPAN
from stack.local import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _stack(tmp_path, name: str, ray: bool) -> Stack:
    return Stack(Settings(run_dir=tmp_path / name, broker_port=free_port(), graph_port=free_port(),
                          ray_port=free_port_span(RAY_PORT_SPAN), start_ray=ray))


def test_up_down_leaves_nothing(tmp_path):
    stack = _stack(tmp_path, "a", ray=True)
    timings = stack.up(apps=False, log=lambda _: None)
    procs = stack.procs()
    assert {p.name for p in procs} == {"broker", "graph", "ray"}
    assert all(alive(p.pid) for p in procs) and timings["total"] > 0
    assert port_open(stack.s.broker_port) and port_open(stack.s.graph_port) and port_open(stack.s.ray_port)
    with pytest.raises(RuntimeError, match="already running"):
        stack.up(apps=False, log=lambda _: None)

    assert stack.down(log=lambda _: None) == 3
    for p in procs:
        assert not alive(p.pid)
        assert group_pids(p.pid) == []  # children (redis, raylet, gcs...) are gone too
    assert not port_open(stack.s.broker_port) and not port_open(stack.s.graph_port)
    assert not stack.state_file.exists()


def test_two_stacks_coexist_and_refuse_busy_ports(tmp_path):
    a = _stack(tmp_path, "a", ray=False)
    b = _stack(tmp_path, "bb", ray=False)
    a.up(apps=False, log=lambda _: None)
    try:
        b.up(apps=False, log=lambda _: None)
        assert {p.pid for p in a.procs()}.isdisjoint({p.pid for p in b.procs()})
        clash = Stack(Settings(run_dir=tmp_path / "c", broker_port=a.s.broker_port, graph_port=free_port(),
                               start_ray=False))
        with pytest.raises(RuntimeError, match=f"broker port {a.s.broker_port}"):
            clash.up(apps=False, log=lambda _: None)
        b.down(log=lambda _: None)
        assert all(alive(p.pid) for p in a.procs())  # stopping b left a alone
    finally:
        a.down(log=lambda _: None)
        b.down(log=lambda _: None)
