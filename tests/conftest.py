"""Session fixtures that start private, real components on free ports (never the user's stack)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_KEEP = {"PREFSTREAM_NEO4J_URI", "PREFSTREAM_NEO4J_USER", "PREFSTREAM_NEO4J_PASSWORD", "PREFSTREAM_NEO4J_DATABASE"}
for _k in [k for k in os.environ if k.startswith("PREFSTREAM_") and k not in _KEEP]:
    os.environ.pop(_k)  # tests define their own settings; a user's env must not point them at a live stack

from prefstream.config import Settings  # noqa: E402
from prefstream.procs import free_port, stop  # noqa: E402


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("prefstream")


@pytest.fixture(scope="session")
def broker(workdir):
    """A real Tansu Kafka-protocol broker; yields its bootstrap address."""
    from stack import services

    port = free_port()
    proc = services.start_broker(port, workdir / "logs")
    try:
        services.wait_broker(proc, f"127.0.0.1:{port}")
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def graph_server(workdir):
    """A real FalkorDB server; yields its port."""
    from stack import services

    port = free_port()
    proc = services.start_graph(port, workdir / "graph", workdir / "logs")
    try:
        services.wait_graph(proc, port)
        yield port
    finally:
        stop(proc)


def private_settings(broker: str, graph_port: int, tmp: Path) -> Settings:
    """Settings pointing at the private broker and graph server, with topics and a graph of their own."""
    tag = uuid.uuid4().hex[:8]
    topics = {name: f"t{tag}.{name}" for name in ("turns", "feedback", "catalog", "requests", "decisions",
                                                   "dead_letter")}
    return Settings(kafka_bootstrap=broker, graph_uri=f"redis://127.0.0.1:{graph_port}", graph_name=f"g{tag}",
                    topics=topics, kafka_partitions=2, run_dir=tmp / "run", model_dir=tmp / "models",
                    router_group=f"router-{tag}", metrics_port=0)


@pytest.fixture
def settings(broker, graph_server, tmp_path) -> Settings:
    return private_settings(broker, graph_server, tmp_path)


@pytest.fixture(scope="module")
def module_settings(broker, graph_server, tmp_path_factory) -> Settings:
    """Like ``settings``, shared by the tests of one module (for expensive set-up such as a filled graph)."""
    return private_settings(broker, graph_server, tmp_path_factory.mktemp("module"))
