"""`prefstream gateway`: serve the OpenAI-compatible endpoint (also started by `prefstream up`)."""

from __future__ import annotations

import argparse
import asyncio
import logging

from prefstream.config import Settings
from prefstream.options import add_stack_options, settings_from

log = logging.getLogger(__name__)


def graph_owners(s: Settings):
    """The graph's turn-owner lookup, opening the store on first use (the gateway starts without the graph)."""
    store = None

    def owners(turn_ids: list[str]) -> dict[str, tuple[str, str]]:
        nonlocal store
        if store is None:
            from graphstore import open_store

            store = open_store(s)
        return store.turn_owners(turn_ids)

    return owners


def build_gateway(s: Settings):
    """The gateway on the configured broker: its Kafka client, the catalog followed from ``llm.catalog``, and
    the graph for feedback checks."""
    from gateway.app import Gateway
    from gateway.catalog import UpstreamCatalog
    from streams.client import PrefstreamClient

    client = PrefstreamClient(s)
    catalog = UpstreamCatalog(s).start()
    return Gateway(s, catalog, client, graph_owners(s))


async def serve(gw, host: str, port: int, on_ready=None, stop: asyncio.Event | None = None) -> None:
    """Serve ``gw`` on host:port until ``stop`` is set (forever without one)."""
    from aiohttp import web

    runner = web.AppRunner(gw.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("gateway on http://%s:%d/v1", host, port)
    if on_ready is not None:
        on_ready()
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await runner.cleanup()


def run_gateway(gw, host: str, port: int, on_ready=None) -> None:
    """Serve ``gw`` until interrupted, on asyncio's loop (uvloop: no consistent gain, bench/results/gateway.md)."""
    asyncio.run(serve(gw, host, port, on_ready))


def cmd_gateway(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    s = settings_from(args)
    from prefstream.ready import ready_callback

    gw = build_gateway(s)
    print(f"prefstream gateway on http://{s.gateway_host}:{s.gateway_port}/v1 "
          f"({len(gw.catalog.routable())} LLMs with an upstream)", flush=True)
    try:
        run_gateway(gw, s.gateway_host, s.gateway_port, ready_callback(s, args.ready_name))
    finally:
        gw.catalog.stop()
        gw.client.close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gateway", help="OpenAI-compatible HTTP endpoint: per-user routing, feedback, /metrics",
                       description="Serve POST /v1/chat/completions (model prefstream/auto is routed by the router "
                                   "workers; a catalog LLM id passes through), POST /v1/feedback, GET /v1/models, "
                                   "/healthz, /readyz and /metrics. Upstreams come from the catalog "
                                   "(`prefstream llms register FILE.yaml`). Settings: PREFSTREAM_GATEWAY_*.")
    add_stack_options(p)
    p.add_argument("--loglevel", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument("--ready-name", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_gateway)
