"""`prefstream router`: serve routing decisions from route.requests."""

from __future__ import annotations

import argparse
import logging

from prefstream.stack_cli import add_stack_options, settings_from


def build_engine(s, threads: int | None = None):
    """The decision engine on the configured graph store, encoder and model registry.

    Torch gets ``router_threads`` threads (default 1): on a small shared machine more threads thrash
    (bench/results/route_latency.md: p50 at 50 req/s fell from 6.6 s to 0.22 s with one thread)."""
    import torch

    from graphstore import open_store
    from prefstream.encoder import TextEncoder
    from workers.engine import RouteEngine
    from workers.models import ModelSource

    from workers.catalog import CatalogCache, catalog_from_topic

    torch.set_num_threads(threads or s.router_threads)
    store = open_store(s, ensure_schema=False)
    try:
        store.ensure_schema()
    except Exception as exc:  # the graph down at start must not stop the router: it answers flagged fallback
        logging.getLogger(__name__).warning("graph store unreachable at start (%s)", exc)
    encoder = TextEncoder(s.encoder, s.encoder_device, max_seq_length=s.encoder_max_seq_length)
    return RouteEngine(store, encoder, ModelSource(s.model_dir).start(), history_turns=s.history_turns,
                       deadline_ms=s.route_deadline_ms, catalog_cache=CatalogCache(s.run_dir / "catalog.json"),
                       catalog_source=lambda: catalog_from_topic(s, encoder))


def cmd_router(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    s = settings_from(args)
    from prefstream.apps import ready_callback

    on_ready = ready_callback(s, args.ready_name)
    if args.workers == 0:
        from streams.route_loop import RouteLoop, serve_forever

        serve_forever(RouteLoop(s, build_engine(s)), on_ready)
        return 0
    from workers.ray_workers import serve_with_ray

    serve_with_ray(s, args.workers, on_ready)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("router", help="serve routing decisions (Ray router workers)",
                       description="Consume route.requests as one consumer group, score candidates with the "
                                   "current model and reply on route.decisions.")
    add_stack_options(p)
    p.add_argument("--workers", type=int, default=1,
                   help="Ray router actors (0 = one in-process loop without Ray)")
    p.add_argument("--loglevel", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument("--ready-name", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_router)
