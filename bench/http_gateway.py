"""Gateway benchmark: which HTTP framework to build on, and what the gateway adds on top of an upstream LLM.

    python bench/http_gateway.py         # -> bench/results/gateway.{json,md}

1. framework: one endpoint doing the gateway's per-request HTTP work (read the body, validate it as an OpenAI
   chat request with gateway.chat.ChatRequest, answer JSON) on aiohttp, and on Starlette under uvicorn (what
   FastAPI runs on; uvloop and httptools as installed), and aiohttp on uvloop, each in one process. A closed-loop aiohttp client with
   CONCURRENCY requests in flight for DURATION seconds measures requests/s and latency.
2. passthrough: `prefstream gateway`'s app (one process; a real broker takes the ChatTurns it publishes)
   forwarding a concrete LLM id to a local OpenAI-compatible upstream (tests/gateway/upstream_server.py, one
   process), next to the same requests sent to that upstream directly: the floor of the same run; the gateway on
   asyncio's loop and on uvloop.
   Non-streamed and streamed (SSE passed through chunk by chunk).
The routed path (model prefstream/auto) adds one Kafka round trip to the router workers, which
bench/route_latency.py measures against the broker echo. A benchmark, not a test: run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, child_env, clean_env, command_line, machine_facts, pct, private_stack, write_json

from prefstream.procs import free_port

# not dependencies of prefstream: their rows are measured where they are installed (pip install uvloop uvicorn)
HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
HAVE_UVICORN = importlib.util.find_spec("uvicorn") is not None and importlib.util.find_spec("starlette") is not None
BODY = {"model": "m-bench", "user": "bench-user", "temperature": 0.2,
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": "Explain the difference between a process and a thread."}]}


# --- servers (child processes) ------------------------------------------------------------------------------
def serve_aiohttp_uvloop(port: int) -> None:
    import uvloop

    uvloop.install()
    serve_aiohttp(port)


def serve_aiohttp(port: int) -> None:
    from aiohttp import web

    from gateway.chat import ChatRequest

    async def handle(request: web.Request) -> web.Response:
        req = ChatRequest.model_validate(json.loads(await request.read()))
        return web.json_response({"model": req.model, "messages": len(req.messages)})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def serve_starlette(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from gateway.chat import ChatRequest

    async def handle(request):
        req = ChatRequest.model_validate(json.loads(await request.body()))
        return JSONResponse({"model": req.model, "messages": len(req.messages)})

    app = Starlette(routes=[Route("/v1/chat/completions", handle, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_upstream(port: int) -> None:
    from tests.gateway.upstream_server import UpstreamServer

    srv = UpstreamServer()
    srv.port, srv.base_url = port, f"http://127.0.0.1:{port}/v1"
    srv.start()
    while True:
        time.sleep(3600)


def serve_gateway_uvloop(port: int, upstream_port: int) -> None:
    import uvloop

    uvloop.install()
    serve_gateway(port, upstream_port)


def serve_gateway(port: int, upstream_port: int) -> None:
    """The gateway's real app; its catalog is given directly (no catalog topic replay needed for passthrough)."""
    from gateway.app import Gateway
    from gateway.catalog import UpstreamCatalog
    from gateway.cli import run_gateway
    from prefstream.config import get_settings
    from prefstream.events import LLMRegistered, Upstream
    from streams.client import PrefstreamClient
    from streams.kafka_config import create_topics

    s = get_settings()
    create_topics(s)
    catalog = UpstreamCatalog(s)
    catalog.add(LLMRegistered(llm_id="m-bench", description="bench", price_in=1.0, price_out=1.0,
                              upstream=Upstream(base_url=f"http://127.0.0.1:{upstream_port}/v1", model="up-bench")))
    run_gateway(Gateway(s, catalog, PrefstreamClient(s)), "127.0.0.1", port)


# --- load -----------------------------------------------------------------------------------------------------
async def closed_loop(url: str, body: dict, concurrency: int, duration: float, stream: bool = False) -> dict:
    import aiohttp

    lat: list[float] = []
    errors = 0
    payload = json.dumps({**body, "stream": stream}).encode()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        async def worker(end: float) -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                async with http.post(url, data=payload, headers={"content-type": "application/json"}) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                lat.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker(time.perf_counter() + 1.0) for _ in range(concurrency)))  # warm-up
        lat.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(t0 + duration) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    ms = [x * 1000 for x in lat]
    return {"requests": len(lat), "req_per_s": round(len(lat) / wall, 1), "p50_ms": round(pct(ms, 50), 2),
            "p99_ms": round(pct(ms, 99), 2), "errors": errors}


def start(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], env=env or child_env_plain(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def child_env_plain() -> dict:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


def wait_port(port: int, timeout: float = 60.0) -> None:
    from prefstream.procs import port_open

    end = time.monotonic() + timeout
    while not port_open(port):
        if time.monotonic() > end:
            raise RuntimeError(f"nothing listens on {port} after {timeout} s")
        time.sleep(0.1)


def measure_server(kind: str, concurrency: int, duration: float) -> dict:
    port = free_port()
    p = start(["--serve", kind, str(port)])
    try:
        wait_port(port)
        return asyncio.run(closed_loop(f"http://127.0.0.1:{port}/v1/chat/completions", BODY, concurrency, duration))
    finally:
        p.terminate()
        p.wait(10)


def framework(concurrency: int, duration: float, repeats: int) -> dict:
    out: dict = {}
    for kind in ("aiohttp", *(["aiohttp_uvloop"] if HAVE_UVLOOP else []), *(["starlette"] if HAVE_UVICORN else [])):
        runs = [measure_server(kind, concurrency, duration) for _ in range(repeats)]
        out[kind] = max(runs, key=lambda r: r["req_per_s"]) | {"runs_req_per_s": [r["req_per_s"] for r in runs]}
    return out


def choose_framework(fw: dict, margin: float = 0.10) -> str:
    """aiohttp unless another server is over ``margin`` faster: aiohttp is also the upstream client (streaming
    both ways, one dependency), so a tie goes to it."""
    best = max(fw, key=lambda k: fw[k]["req_per_s"])
    return best if fw[best]["req_per_s"] > (1 + margin) * fw["aiohttp"]["req_per_s"] else "aiohttp"


def passthrough(concurrency: int, duration: float) -> dict:
    rows: dict = {}
    with private_stack("gateway") as st:
        s = st.settings(metrics_port=0)
        up_port, gw_port, gwu_port = free_port(), free_port(), free_port()
        procs = [start(["--serve", "upstream", str(up_port)]),
                 start(["--serve", "gateway", str(gw_port), str(up_port)], env=child_env(s)),
                 *([start(["--serve", "gateway_uvloop", str(gwu_port), str(up_port)], env=child_env(s))]
                   if HAVE_UVLOOP else [])]
        try:
            for port in (up_port, gw_port, *([gwu_port] if HAVE_UVLOOP else [])):
                wait_port(port, 120)
            for stream in (False, True):
                key = "stream" if stream else "json"
                body = {**BODY, "model": "up-bench"}
                rows[f"upstream_{key}"] = asyncio.run(closed_loop(
                    f"http://127.0.0.1:{up_port}/v1/chat/completions", body, concurrency, duration, stream))
                for name, port in (("gateway", gw_port), *([("gateway_uvloop", gwu_port)] if HAVE_UVLOOP else [])):
                    rows[f"{name}_{key}"] = asyncio.run(closed_loop(
                        f"http://127.0.0.1:{port}/v1/chat/completions", BODY, concurrency, duration, stream))
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)
    return rows


def write_md(res: dict) -> None:
    fw, pt = res["framework"], res["passthrough"]
    lines = ["# Gateway benchmark", "", f"Command: `{res['command']}`  ", f"Load average before: {res['machine']['loadavg_1_5_15']}",
             "", f"## Framework (validate an OpenAI chat body, answer JSON; one server process, {res['concurrency']} "
             f"in flight, {res['duration_s']} s, best of {res['repeats']})", "",
             "| server | req/s | p50 ms | p99 ms | runs (req/s) |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['req_per_s']} | {v['p50_ms']} | {v['p99_ms']} | {v['runs_req_per_s']} |" for k, v in fw.items()]
    lines += ["", f"Chosen: **{res['chosen']}** (aiohttp unless another server is over 10 % faster: aiohttp is "
              "also the upstream client, streaming both ways).", "", "## Passthrough (concrete LLM id) vs the upstream alone",
              "", "| path | req/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['req_per_s']} | {v['p50_ms']} | {v['p99_ms']} | {v['errors']} |" for k, v in pt.items()]
    lines += ["", "The gateway runs on asyncio's loop (gateway/cli.py); the gateway_uvloop_* rows are the same app on "
              "uvloop, measured in the same run (earlier runs disagreed on whether it gains).", "",
              "Ratios at saturation (gateway / upstream alone): " + ", ".join(f"{k} p50 {v}x" for k, v in res["ratios"].items()),
              "", "The routed path adds the Kafka round trip to the router: bench/results/route_latency.md."]
    (RESULTS / "gateway.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if args.serve:
        kind, *ports = args.serve
        {"aiohttp": serve_aiohttp, "aiohttp_uvloop": serve_aiohttp_uvloop, "starlette": serve_starlette, "upstream": serve_upstream,
         "gateway": serve_gateway, "gateway_uvloop": serve_gateway_uvloop}[kind](*map(int, ports))
        return
    clean_env()
    res = {"command": command_line(), "machine": machine_facts(), "concurrency": args.concurrency,
           "duration_s": args.duration, "repeats": args.repeats}
    res["framework"] = framework(args.concurrency, args.duration, args.repeats)
    res["chosen"] = choose_framework(res["framework"])
    res["passthrough"] = passthrough(args.concurrency, args.duration)
    pt = res["passthrough"]
    res["ratios"] = {k: round(pt[f"gateway_{k}"]["p50_ms"] / pt[f"upstream_{k}"]["p50_ms"], 2)
                     for k in ("json", "stream")}  # as `prefstream gateway` runs: on asyncio's loop
    res["loadavg_after"] = list(os.getloadavg())
    write_json(RESULTS / "gateway.json", res)
    write_md(res)
    print((RESULTS / "gateway.md").read_text())


if __name__ == "__main__":
    main()
