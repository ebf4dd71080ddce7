"""`prefstream router`: serve routing decisions from route.requests."""

from __future__ import annotations

import argparse
import logging

from prefstream.options import add_stack_options, settings_from


def cmd_router(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    s = settings_from(args)
    from prefstream.ready import ready_callback

    on_ready = ready_callback(s, args.ready_name)
    if args.workers == 0:
        from prefstream.metrics import metrics_port_for, serve_metrics
        from streams.route_loop import RouteLoop, serve_forever
        from workers.build import build_engine

        serve_metrics(metrics_port_for(s.metrics_port, "router"))

        serve_forever(RouteLoop(s, build_engine(s)), on_ready)
        return 0
    from prefstream.errors import need_ray
    from workers.ray_workers import serve_with_ray

    need_ray(s, wait_s=60.0 if args.ready_name else 3.0)  # under `up`, Ray may still be starting

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
