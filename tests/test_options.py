"""The stack options every command shares (prefstream/options.py): which servers a command talks to."""

from __future__ import annotations

import argparse
import json

import pytest

from prefstream.config import Settings
from prefstream.options import settings_from, with_port


@pytest.fixture
def fresh_settings(monkeypatch):
    """settings_from reads the process's settings once (get_settings); start from the defaults."""
    import prefstream.options as options

    monkeypatch.setattr(options, "get_settings", lambda: Settings(graph_uri="redis://127.0.0.1:6379"))


def _args(run_dir, **ports) -> argparse.Namespace:
    """A command's stack options: ``ports`` given on its command line, the others not."""
    names = ("broker_port", "graph_port", "ray_port", "gateway_port")
    return argparse.Namespace(run_dir=run_dir, **{k: ports.get(k) for k in names})


def test_a_graph_port_on_the_command_line_is_where_every_command_reads_the_graph(fresh_settings, tmp_path):
    """`--graph-port` points the FalkorDB address at that port (doctor, status, train, audit, counts alike), and
    wins over the addresses a stack started from the run directory recorded, which win over the defaults; so does
    `--broker-port` for a one-broker bootstrap (a list of brokers is kept)."""
    s = settings_from(_args(tmp_path, graph_port=7001))
    assert s.graph_port == 7001 and s.graph_uri == "redis://127.0.0.1:7001"
    (tmp_path / "stack.json").write_text(json.dumps({"settings": {"graph_port": 6500,
                                                                  "graph_uri": "redis://127.0.0.1:6500"}}))
    assert settings_from(_args(tmp_path)).graph_uri == "redis://127.0.0.1:6500"
    s = settings_from(_args(tmp_path, graph_port=7002, ray_port=7100, broker_port=19093))
    assert (s.graph_uri, s.graph_port, s.ray_port) == ("redis://127.0.0.1:7002", 7002, 7100)
    assert (s.kafka_bootstrap, s.broker_port) == ("127.0.0.1:19093", 19093)  # the broker's port too


def test_with_port_keeps_the_rest_of_the_address():
    assert with_port("redis://:secret@graph.internal:6379/0", 7001) == "redis://:secret@graph.internal:7001/0"
    assert with_port("rediss://user:pw@host", 6380) == "rediss://user:pw@host:6380"
    assert with_port("redis://[::1]:6379", 7001) == "redis://[::1]:7001"


def test_a_broker_list_is_kept_whatever_the_broker_port(monkeypatch, tmp_path):
    import prefstream.options as options

    monkeypatch.setattr(options, "get_settings", lambda: Settings(kafka_bootstrap="k1:9092,k2:9092"))
    assert settings_from(_args(tmp_path, broker_port=19093)).kafka_bootstrap == "k1:9092,k2:9092"
