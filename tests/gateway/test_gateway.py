"""The gateway end to end on real components: HTTP client -> gateway -> Kafka -> router loop (real graph, encoder,
count-based scorer) -> gateway -> a real OpenAI-compatible upstream (streaming) -> ChatTurn on Kafka -> ingest ->
graph; feedback back through the gateway."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest

from prefstream.events import LLMRegistered, Upstream
from prefstream.procs import free_port
from streams.client import PrefstreamClient
from tests.gateway.upstream_server import UpstreamServer, answer_for
from tests.streams.conftest import read_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LLMS = {"m-small": ("A small, fast and cheap model for simple questions.", 0.1, 0.1),
        "m-math": ("A model specialized in mathematics and step-by-step reasoning.", 0.5, 0.5),
        "m-large": ("A large general model, strong on knowledge questions, expensive.", 2.0, 4.0)}


class GatewayThread:
    """``prefstream gateway``'s serve() on its own event loop in a thread."""

    def __init__(self, s):
        from gateway.cli import build_gateway

        self.s = s
        self.gw = build_gateway(s)
        self.url = f"http://127.0.0.1:{s.gateway_port}"
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from gateway.cli import serve

        async def main():
            self._stop = asyncio.Event()
            await serve(self.gw, "127.0.0.1", self.s.gateway_port, self._ready.set, self._stop)

        self._loop.run_until_complete(main())

    def start(self) -> "GatewayThread":
        self._thread.start()
        assert self._ready.wait(30), "gateway did not start"
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)
        self.gw.catalog.stop()
        self.gw.client.close()


@pytest.fixture
def upstream():
    srv = UpstreamServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def stack(settings, topics, store, ingest_worker, upstream, monkeypatch):
    """Catalog with upstreams, a router loop and a gateway on the private broker and graph."""
    from streams.route_loop import RouteLoop
    from workers.build import build_engine

    monkeypatch.setenv("UPSTREAM_TEST_KEY", "sk-test-123")
    s = settings.model_copy(update={"gateway_port": free_port(), "route_deadline_ms": 5000})
    with PrefstreamClient(s) as c:
        for llm_id, (desc, pin, pout) in LLMS.items():
            c.publish(LLMRegistered(llm_id=llm_id, description=desc, price_in=pin, price_out=pout,
                                    upstream=Upstream(base_url=upstream.base_url, model=f"up-{llm_id}",
                                                      api_key_env="UPSTREAM_TEST_KEY")), wait=True)
        c.register_llm("m-noupstream", "Registered for routing only.", 0.1, 0.1)
    wait_for(lambda: len(store.llm_catalog()) == 4, 60, "catalog ingested")
    loop = RouteLoop(s, build_engine(s))
    ready = threading.Event()
    t = threading.Thread(target=loop.run, args=(ready,), daemon=True)
    t.start()
    ready.wait(30)
    gw = GatewayThread(s).start()
    wait_for(lambda: len(gw.gw.catalog.routable()) == 3, 30, "gateway catalog")
    yield s, gw
    gw.stop()
    loop.stop()
    t.join(15)


def chat(model="prefstream/auto", text="What is 2 + 2?", user="alice", **extra) -> dict:
    return {"model": model, "user": user, "messages": [{"role": "system", "content": "be brief"},
                                                       {"role": "user", "content": text}], **extra}


def sample(exposition: str, name: str, **labels) -> float:
    """The value of one Prometheus sample (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(smp.value for fam in text_string_to_metric_families(exposition) for smp in fam.samples
               if smp.name == name and all(smp.labels.get(k) == v for k, v in labels.items()))


def stream_text(resp: httpx.Response) -> tuple[str, list[dict]]:
    """The streamed answer's text and every data event, from the raw SSE lines."""
    events = [json.loads(line[5:]) for line in resp.iter_lines() if line.startswith("data:") and "[DONE]" not in line]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e.get("choices"))
    return text, events


def test_routed_stream_is_passed_through_and_recorded(stack, store, upstream):
    s, gw = stack
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        with http.stream("POST", "/v1/chat/completions", json=chat(stream=True, candidates=list(LLMS))) as r:
            assert r.status_code == 200, r.read()
            text, _ = stream_text(r)
            h = r.headers
        exposed = http.get("/metrics").text  # the router loop runs in this process: its metrics are here too
    llm = h["x-prefstream-llm"]
    assert llm in LLMS and h["x-prefstream-fallback"] == "false"
    assert text == answer_for(f"up-{llm}", {"messages": [{"role": "user", "content": "What is 2 + 2?"}]})
    body, auth = upstream.seen[-1]
    assert body["model"] == f"up-{llm}" and body["stream"] is True and auth == "Bearer sk-test-123"
    assert "candidates" not in body and "budget" not in body
    turns = [t for t in read_all(s, s.topics.turns, 1) if t["event_id"] == h["x-prefstream-turn-id"]]
    assert len(turns) == 1 and turns[0]["llm_id"] == llm and turns[0]["response"] == text
    assert turns[0]["user_id"] == "alice" and turns[0]["query"] == "What is 2 + 2?" and turns[0]["turn_index"] == 0
    wait_for(lambda: store.decision(h["x-prefstream-request-id"]) is not None, 30, "decision audited")
    assert store.decision(h["x-prefstream-request-id"])["chosen_llm_id"] == llm
    assert sample(exposed, "prefstream_decisions_total", llm=llm, kind="decision") >= 1
    assert sample(exposed, "prefstream_gateway_requests_total", endpoint="/v1/chat/completions", code="200") >= 1
    assert sample(exposed, "prefstream_subgraph_read_seconds_count") >= 1
    assert sample(exposed, "prefstream_route_latency_seconds_count") >= 1


def test_passthrough_next_best_and_broken_stream(stack, upstream):
    s, gw = stack
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        r = http.post("/v1/chat/completions", json=chat(model="m-math", text="integrate x"))
        assert r.status_code == 200 and r.headers["x-prefstream-llm"] == "m-math"
        assert r.json()["choices"][0]["message"]["content"] == "[up-m-math] you said: integrate x"
        first = http.post("/v1/chat/completions", json=chat(user="bob"))
        chosen = first.headers["x-prefstream-llm"]
        upstream.fail.add(f"up-{chosen}")  # the router's choice now fails before its first byte
        second = http.post("/v1/chat/completions", json=chat(user="bob"))
        assert second.status_code == 200 and second.headers["x-prefstream-llm"] != chosen
        assert "upstream" in second.headers["x-prefstream-fallback"]
        assert http.post("/v1/chat/completions", json=chat(model=chosen)).status_code == 502
        upstream.fail.clear()
        upstream.break_mid.add("up-m-small")
        with http.stream("POST", "/v1/chat/completions", json=chat(model="m-small", stream=True)) as r:
            _, events = stream_text(r)
            broken_turn = r.headers["x-prefstream-turn-id"]
        assert "error" in events[-1] and "m-small" in events[-1]["error"]["message"]
        metrics = http.get("/metrics").text
    assert sample(metrics, "prefstream_gateway_upstream_errors_total", llm="m-small", stage="stream") == 1
    assert sample(metrics, "prefstream_gateway_upstream_errors_total", stage="status") >= 2
    assert broken_turn not in {t["event_id"] for t in read_all(s, s.topics.turns, 3)}


def test_feedback_only_on_own_turns(stack):
    s, gw = stack
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        t1 = http.post("/v1/chat/completions", json=chat(model="m-small")).headers["x-prefstream-turn-id"]
        t2 = http.post("/v1/chat/completions", json=chat(model="m-large")).headers["x-prefstream-turn-id"]
        up = http.post("/v1/feedback", json={"turn_id": t1, "thumbs_up": True}, headers={"x-prefstream-user": "alice"})
        pair = http.post("/v1/feedback", json={"turn_id": t2, "preferred_over": t1, "user": "alice"})
        other = http.post("/v1/feedback", json={"turn_id": t1, "thumbs_up": False, "user": "mallory"})
        missing = http.post("/v1/feedback", json={"turn_id": "turn-nope", "score": 3, "user": "alice"})
        two = http.post("/v1/feedback", json={"turn_id": t1, "score": 3, "thumbs_up": True, "user": "alice"})
    assert up.status_code == 202 and up.json()["rating"] == 1.0
    assert pair.status_code == 202
    assert other.status_code == 404 and missing.status_code == 404
    assert "alice" not in other.text  # nothing about the turn's owner
    assert two.status_code == 400 and "exactly one" in two.json()["error"]["message"]
    got = {f["event_id"]: f for f in read_all(s, s.topics.feedback, 2)}
    assert got[up.json()["id"]]["signal"] == {"kind": "thumbs", "up": True}
    assert got[pair.json()["id"]]["signal"] == {"kind": "pairwise", "preferred_llm_id": "m-large",
                                                "rejected_llm_id": "m-small", "rejected_turn_id": t1, "tie": False}


def test_bad_requests_get_clear_errors(stack):
    s, gw = stack
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        nobody = http.post("/v1/chat/completions", json={**chat(), "user": None})
        not_json = http.post("/v1/chat/completions", content=b"{nope")
        huge = http.post("/v1/chat/completions", json=chat(text="x" * (s.gateway_max_body_bytes + 10)))
        unknown = http.post("/v1/chat/completions", json=chat(model="gpt-unknown"))
        route_only = http.post("/v1/chat/completions", json=chat(candidates=["m-small", "m-noupstream"]))
        bad_user = http.post("/v1/chat/completions", json=chat(), headers={"x-prefstream-user": "a b"})
        models = http.get("/v1/models").json()
        ready = http.get("/readyz")
    assert nobody.status_code == 400 and nobody.json()["error"]["param"] == "user"
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]["message"]
    assert huge.status_code == 413
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert route_only.status_code == 400 and "m-noupstream" in route_only.json()["error"]["message"]
    assert bad_user.status_code == 200  # the body's user wins over the header
    ids = {m["id"]: m for m in models["data"]}
    assert "prefstream/auto" in ids and ids["m-noupstream"]["routable"] is False and ids["m-math"]["routable"]
    assert ready.status_code == 200 and ready.json()["routable_llms"] == 3
