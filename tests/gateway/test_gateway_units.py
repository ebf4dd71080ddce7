"""The gateway's pieces on their own: request reading, SSE text, the catalog file, feedback ownership, API keys,
metrics labels."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from gateway.chat import ChatRequest, conversation_of, query_of, turn_index_of
from gateway.feedback import NotYours, TurnBook, feedback_event
from gateway.chat import FeedbackRequest
from gateway.upstream import StreamText
from prefstream.config import Settings
from prefstream.errors import CliError
from prefstream.metrics import metrics_port_for, reason_class, serve_metrics, version_number
from streams.catalog_file import read_catalog_file


def req(*messages, **kw) -> ChatRequest:
    return ChatRequest.model_validate({"model": "prefstream/auto", "messages": list(messages), **kw})


def test_query_turn_and_conversation_come_from_the_messages():
    first = req({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"})
    later = req({"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "text", "text": "and"}, {"type": "image_url"},
                                             {"type": "text", "text": "now?"}]})
    assert query_of(first) == "hi" and turn_index_of(first) == 0
    assert query_of(later) == "and\nnow?" and turn_index_of(later) == 1
    assert conversation_of("u1", first, None) == conversation_of("u1", later, None)  # same first message
    assert conversation_of("u2", first, None) != conversation_of("u1", first, None)
    assert conversation_of("u1", first, "c-7") == "c-7"
    with pytest.raises(ValueError):
        conversation_of("u1", first, "bad id with spaces")
    assert query_of(req({"role": "system", "content": "x"})) == ""


def test_upstream_body_keeps_openai_fields_and_drops_prefstream_ones():
    r = req({"role": "user", "content": "hi"}, temperature=0.2, candidates=["a"], budget=1.0, stream=True)
    body = r.upstream_body("up-model")
    assert body["model"] == "up-model" and body["temperature"] == 0.2 and body["stream"] is True
    assert "candidates" not in body and "budget" not in body


def test_stream_text_collects_deltas_across_chunk_boundaries():
    events = [{"choices": [{"index": 0, "delta": {"content": w}}]} for w in ("Hel", "lo", " world")]
    raw = "".join(f"data: {json.dumps(e)}\n\n" for e in events).encode() + b"data: [DONE]\n\n"
    t = StreamText()
    for i in range(0, len(raw), 7):  # cut anywhere, even inside a line
        t.feed(raw[i:i + 7])
    assert t.text == "Hello world" and t.done and t.error is None
    t2 = StreamText()
    t2.feed(b'data: {"error": {"message": "overloaded"}}\n\n')
    assert "overloaded" in t2.error


def test_catalog_file_is_checked_whole_and_keys_never_travel(tmp_path):
    good = tmp_path / "llms.yaml"
    good.write_text("llms:\n  - id: small\n    description: cheap\n    price_in: 1\n    price_out: 0.5\n"
                    "    upstream: {base_url: 'http://127.0.0.1:9/v1', model: s1, api_key_env: MY_KEY}\n"
                    "  - id: big\n    description: strong\n    price_in: 2.0\n    price_out: 4.0\n")
    events = read_catalog_file(good)
    assert [e.llm_id for e in events] == ["small", "big"]
    assert events[0].upstream.api_key_env == "MY_KEY" and events[1].upstream is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("- id: a\n  description: x\n  price_in: -1\n  price_out: 1\n"
                   "- id: b\n  description: y\n  price_in: 1\n  price_out: 1\n"
                   "  upstream: {base_url: 'http://h/v1', model: m, api_key: sk-secret}\n")
    with pytest.raises(CliError) as exc:
        read_catalog_file(bad)
    assert "llms[0].price_in" in str(exc.value) and "llms[1].upstream.api_key" in str(exc.value)
    assert exc.value.code == 2


def test_feedback_is_taken_only_on_the_users_own_turns():
    book = TurnBook(size=2)
    book.add("t1", "alice", "m-a")
    book.add("t2", "alice", "m-b")
    book.add("t3", "bob", "m-a")  # t1 falls out of the book: the graph lookup answers for it
    owners = book.owners(["t1", "t2"], elsewhere=lambda ids: {"t1": ("alice", "m-a")} if "t1" in ids else {})
    fb = feedback_event(FeedbackRequest(turn_id="t2", preferred_over="t1"), "alice", owners, "fb-1")
    assert (fb.signal.preferred_llm_id, fb.signal.rejected_llm_id, fb.rating) == ("m-b", "m-a", 1.0)
    with pytest.raises(NotYours):
        feedback_event(FeedbackRequest(turn_id="t3", thumbs_up=True), "alice", book.owners(["t3"]), "fb-2")
    with pytest.raises(NotYours):
        feedback_event(FeedbackRequest(turn_id="t9", thumbs_up=True), "alice", book.owners(["t9"]), "fb-3")
    with pytest.raises(ValueError):  # outside its scale
        feedback_event(FeedbackRequest(turn_id="t2", score=11), "alice", owners, "fb-4")


def test_api_keys_are_required_when_configured():
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.app import Gateway
    from gateway.catalog import UpstreamCatalog

    s = Settings(gateway_keys="k1, k2", metrics_port=0)

    async def run():
        gw = Gateway(s, UpstreamCatalog(s), client=None)
        async with TestClient(TestServer(gw.app())) as c:
            none = await c.post("/v1/chat/completions", json={})
            wrong = await c.get("/v1/models", headers={"authorization": "Bearer nope"})
            right = await c.get("/v1/models", headers={"authorization": "Bearer k2"})
            health = await c.get("/healthz")
            return none.status, (await none.json())["error"]["type"], wrong.status, right.status, health.status

    assert asyncio.run(run()) == (401, "authentication_error", 401, 200, 200)


def test_metric_labels_and_ports():
    assert reason_class("invalid ChatTurn: query: field required") == "schema"
    assert reason_class("message is not valid JSON: x") == "malformed"
    assert reason_class("unknown llm_id 'x': publish ...") == "unknown_llm"
    assert reason_class("something new") == "other"
    assert version_number("v0012") == 12 and version_number(None) == 0
    assert metrics_port_for(9400, "router", 2) == 9412 and metrics_port_for(0, "ingest") == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert serve_metrics(busy.getsockname()[1]) == 0  # a port in use is a warning, not a failure


def test_dashboard_queries_only_metrics_prefstream_exposes():
    import re
    from pathlib import Path

    from prometheus_client import REGISTRY, generate_latest

    from prefstream.metrics import metrics

    metrics()
    exposed = set(re.findall(r"^# TYPE (prefstream_\w+) (\w+)", generate_latest(REGISTRY).decode(), re.M))
    names = {n for n, _ in exposed}
    names |= {f"{n}_{suffix}" for n, kind in exposed for suffix in ("total", "bucket", "count", "sum")
              if kind in ("counter", "histogram")}
    dash = json.loads((Path(__file__).parents[2] / "deploy/grafana/prefstream-dashboard.json").read_text())
    used = {m for p in dash["panels"] for t in p["targets"] for m in re.findall(r"prefstream_\w+", t["expr"])}
    assert used and used <= names, used - names


def test_feedback_while_the_graph_is_down_is_a_clear_503():
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.app import Gateway
    from gateway.catalog import UpstreamCatalog

    s = Settings(metrics_port=0)

    def graph_down(ids):
        raise ConnectionError("graph store unreachable")

    async def run():
        gw = Gateway(s, UpstreamCatalog(s), client=None, owners=graph_down)
        async with TestClient(TestServer(gw.app())) as c:
            r = await c.post("/v1/feedback", json={"turn_id": "t-old", "user": "alice", "thumbs_up": True})
            return r.status, (await r.json())["error"]["type"]

    assert asyncio.run(run()) == (503, "service_unavailable")
