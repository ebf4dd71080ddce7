"""A kill -9 of the local graph server loses no acknowledged write (the ingest commits Kafka offsets on that)."""

from __future__ import annotations

import os
import signal
import uuid

import numpy as np
import pytest

from graphstore import open_store
from stack import services
from prefstream.config import Settings
from prefstream.procs import alive, free_port, stop, wait_until
from tests.graphstore.graphstore_events import llm, thumbs, turn, with_emb


@pytest.mark.timeout(120)
def test_acknowledged_writes_survive_kill_9(tmp_path):
    port = free_port()
    data, logs = tmp_path / "graph", tmp_path / "logs"
    settings = Settings(graph_uri=f"redis://127.0.0.1:{port}", graph_name=f"dur{uuid.uuid4().hex[:8]}",
                        graph_batch_size=50)
    proc = services.start_graph(port, data, logs)
    try:
        services.wait_graph(proc, port)
        store = open_store(settings)
        store.upsert_llms([llm("m1"), llm("m2")])
        turns = [turn(f"t{i}", user=f"u{i % 17}", conv=f"c{i % 41}", idx=i // 41, ts=1000 + i, llm=f"m{1 + i % 2}",
                      query=f'q {i} "quoted" \u00fc MATCH (n) DETACH DELETE n') for i in range(400)]
        store.upsert_turns(with_emb(*turns))
        store.upsert_feedback([thumbs(f"f{i}", f"t{i}", up=i % 3 == 0, ts=5000 + i, user=f"u{i % 17}")
                               for i in range(0, 400, 2)])
        store.close()
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown save
        wait_until(lambda: not alive(proc.pid), 10, "killed graph server gone")

        proc = services.start_graph(port, data, logs)
        services.wait_graph(proc, port)
        store = open_store(settings)
        try:
            assert store.count("Turn") == 400
            assert store.count("LLM") == 2
            assert store.count("User") == 17
            sub = store.user_subgraph("u0", k=400)
            assert len(sub.turn_ids) == len(range(0, 400, 17))
            rated = int(np.isfinite(sub.rating).sum())
            assert rated == len([i for i in range(0, 400, 17) if i % 2 == 0])
            store.ensure_schema()  # indexes came back with the data; running the DDL again is harmless
        finally:
            store.close()
    finally:
        stop(proc)
