"""Helpers for streaming tests: a real Faust ingest worker process and topic readers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from prefstream.config import Settings
from prefstream.procs import Proc, wait_healthy
from prefstream.ready import is_ready
from streams.kafka_config import consumer_kwargs, create_topics


def wait_for(check, timeout: float = 60.0, what: str = "condition", interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


READY_NAME = "ingest"


class IngestWorker:
    """`prefstream ingest` as a real child process, restartable, killable."""

    def __init__(self, s: Settings, log: Path):
        self.s, self.log, self.proc = s, log, None

    def start(self, *extra: str) -> "IngestWorker":
        env = {**os.environ, **self.s.to_env(), "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "stack.cli", "ingest", "--loglevel", "info",
                                      "--ready-name", READY_NAME, *extra],
                                     env=env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 300.0) -> "IngestWorker":
        """Until the worker has loaded its encoder and graph connection (`prefstream up`'s ready-file check).

        A cold first start (imports, encoder load) can take minutes on a slow, loaded machine; tests then time
        only the ingest itself. Fails at once, with the log's tail, when the worker exits instead."""
        proc = Proc(name="ingest", pid=self.proc.pid, port=None, cmd=self.proc.args, log=str(self.log))
        wait_healthy(proc, lambda: is_ready(READY_NAME)(self.s, proc), timeout, "ingest worker")
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def topics(settings):
    create_topics(settings)
    return settings.topics


@pytest.fixture
def ingest_worker(settings, topics, tmp_path):
    w = IngestWorker(settings, tmp_path / "ingest.log").start().wait_ready()
    yield w
    w.stop()


@pytest.fixture
def store(settings):
    from graphstore import open_store

    st = open_store(settings)
    st.ensure_schema()
    yield st
    st.clear()
    st.close()


def read_all(s: Settings, topic: str, expect: int, timeout: float = 30.0) -> list[dict]:
    """Every message on ``topic`` (JSON), waiting until at least ``expect`` arrived."""
    consumer = KafkaConsumer(topic, **consumer_kwargs(s, group_id=None))
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(got) < expect:
            for records in consumer.poll(timeout_ms=200).values():
                got += [json.loads(r.value) for r in records]
        # a little longer, to catch messages beyond the expected count
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            for records in consumer.poll(timeout_ms=200).values():
                got += [json.loads(r.value) for r in records]
    finally:
        consumer.close()
    return got
