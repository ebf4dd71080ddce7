"""The first hour (issue 21): with nothing running, every command fails fast with one line and the fix."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from prefstream.procs import free_port

BOUND_S = 20.0  # generous (imports on a loaded 2-core box); the point is no 30 s bootstrap hang


@pytest.fixture
def env(tmp_path):
    e = {k: v for k, v in os.environ.items() if not k.startswith("PREFSTREAM_")}
    e.update(PREFSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
             PREFSTREAM_GRAPH_URI=f"redis://127.0.0.1:{free_port()}", PREFSTREAM_RUN_DIR=str(tmp_path / "run"),
             PREFSTREAM_RAY_ADDRESS=f"127.0.0.1:{free_port()}")
    return e


def _run(env, *args, stdin: bytes | None = None):
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "stack.cli", *args], env=env, capture_output=True, input=stdin,
                       timeout=120)
    return p.returncode, p.stdout.decode(), p.stderr.decode(), time.monotonic() - t0


@pytest.mark.parametrize("args, needle", [
    (("route", "bob", "hello"), "no Kafka broker at 127.0.0.1:"),
    (("audit", "bob"), "no graph server at redis://127.0.0.1:"),
    (("counts", "--repair"), "no graph server at redis://127.0.0.1:"),
    (("ingest",), "no Kafka broker at 127.0.0.1:"),
    (("router", "--workers", "1"), "no Ray cluster at 127.0.0.1:"),
    (("router", "--workers", "0"), "no graph server at redis://127.0.0.1:"),
    (("train", "--once"), "no graph server at redis://127.0.0.1:"),
])
def test_no_stack_is_one_line_with_the_fix(env, args, needle):
    rc, out, err, dt = _run(env, *args)
    assert rc == 1 and dt < BOUND_S
    assert needle in err and 'prefstream up' in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_debug_shows_the_traceback(env):
    rc, _, err, _ = _run(env, "--debug", "route", "bob", "hello")
    assert rc != 0 and "Traceback" in err


def test_publish_checks_the_whole_file_first_with_line_numbers(env, tmp_path):
    f = tmp_path / "events.jsonl"
    f.write_text('{"type": "chat_turn"}\n\n{"not json\n')
    rc, _, err, dt = _run(env, "publish", str(f))
    assert rc == 2 and dt < BOUND_S  # never connected: the broker does not exist
    assert f"{f}:1: invalid ChatTurn" in err and f"{f}:3: message is not valid JSON" in err
    assert "nothing published" in err and "Traceback" not in err
    rc, _, err, _ = _run(env, "publish", "--skip-invalid", str(f))  # the rest would go out: now it needs Kafka
    assert rc == 1 and "no Kafka broker" in err


def test_route_arguments_are_checked_like_the_wire_schema(env):
    rc, _, err, _ = _run(env, "route", "bob", "hi", "--budget", "-1")
    assert rc == 2 and "invalid request: budget" in err and "Traceback" not in err


def test_status_with_nothing_running_names_each_component_and_its_fix(env):
    rc, out, err, dt = _run(env, "status")
    assert rc == 1 and dt < BOUND_S and "Traceback" not in out + err
    assert "BAD  broker" in out and "no Kafka broker at 127.0.0.1:" in out
    assert "BAD  graph" in out and "no graph server at redis://127.0.0.1:" in out
    assert "serving the count-based scorer" in out and "no trainer cycle yet" in out
    assert out.count("fix: ") >= 2 and "prefstream up" in out
