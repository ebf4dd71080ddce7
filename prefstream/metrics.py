"""Prometheus metrics of every prefstream process, all named ``prefstream_*``.

Each app (gateway, router worker, ingest, trainer) exposes the metrics it updates on ``/metrics``: the gateway
on its own HTTP port, the others on ``PREFSTREAM_METRICS_PORT`` (+ an offset each, see ``metrics_port_for``).
Labels are bounded: LLM ids, outcome kinds, event types, reason classes; never a user. The metric objects
are created on first use (``metrics()``), not at import.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import lru_cache

log = logging.getLogger(__name__)

#: seconds; from a cached decision (~ms) to an upstream LLM's whole answer (~minutes)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: where each app's /metrics listens, relative to ``metrics_port``
PORT_OFFSETS = {"ingest": 0, "trainer": 1, "router": 10}


@dataclass(frozen=True)
class Metrics:
    decisions: object  # Counter{llm, kind}: kind = decision | fallback | shed | error
    route_latency: object  # Histogram: the router's time for one request (dequeued -> decided)
    route_batch: object  # Histogram: one micro-batch, decided and its replies handed to the producer
    route_decide_share: object  # Gauge: share of the deadline one router call decides (queue-delay control)
    encoder: object  # Histogram{component}: one encoder call (new texts only)
    subgraph_read: object  # Histogram: one batched read of the users' subgraphs
    consumer_lag: object  # Gauge{group, topic}: records behind the end of the topic
    serving_version: object  # Gauge: the model version serving (0: the count-based scorer)
    ingested: object  # Counter{type}: events accepted into the graph
    dead_letters: object  # Counter{reason}: events refused, by reason class
    trainer_cycles: object  # Counter{outcome}: promoted | refused | demoted | skipped | failed
    trainer_promotions: object  # Counter
    trainer_last_cycle: object  # Gauge: unix time of the last finished cycle
    trainer_watch: object  # Gauge{quantity}: the live watch of the serving model (trainer/watch.py)
    trainer_counts_rebuilt: object  # Counter: users whose kept win counts a cycle found stale and rebuilt
    gateway_requests: object  # Counter{endpoint, code}
    gateway_latency: object  # Histogram{endpoint}: whole request, first byte to last for streams
    gateway_route: object  # Histogram: the gateway's wait for a routing decision over Kafka
    gateway_first_byte: object  # Histogram: request in -> first byte from the upstream
    gateway_upstream_errors: object  # Counter{llm, stage}: stage = connect | status | timeout | stream
    gateway_turns: object  # Counter{outcome}: ChatTurns published (or skipped: empty answer)


_CREATE = threading.Lock()


def metrics() -> Metrics:
    """The process's metric objects, created on first use in the default Prometheus registry (once, even when
    several threads ask first at the same time)."""
    with _CREATE:
        return _create()


@lru_cache(maxsize=1)
def _create() -> Metrics:
    from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

    disable_created_metrics()  # no *_created series next to every counter
    h = {"buckets": LATENCY_BUCKETS}
    return Metrics(
        decisions=Counter("prefstream_decisions", "Routing replies by chosen LLM and kind", ["llm", "kind"]),
        route_latency=Histogram("prefstream_route_latency_seconds", "Router time per request", **h),
        route_batch=Histogram("prefstream_route_batch_seconds", "Router time per micro-batch", **h),
        route_decide_share=Gauge("prefstream_route_decide_share",
                                 "Share of the deadline one router call decides (lower: a queue stands, more is shed)"),
        encoder=Histogram("prefstream_encoder_seconds", "One encoder call on new texts", ["component"], **h),
        subgraph_read=Histogram("prefstream_subgraph_read_seconds", "One batched user-subgraph read", **h),
        consumer_lag=Gauge("prefstream_consumer_lag", "Records behind the topic end", ["group", "topic"]),
        serving_version=Gauge("prefstream_serving_model_version", "Model version serving (0: count-based)"),
        ingested=Counter("prefstream_ingested_events", "Events accepted into the graph", ["type"]),
        dead_letters=Counter("prefstream_dead_letters", "Events refused to the dead-letter topic", ["reason"]),
        trainer_cycles=Counter("prefstream_trainer_cycles", "Trainer cycles by outcome", ["outcome"]),
        trainer_promotions=Counter("prefstream_trainer_promotions", "Candidates promoted to serve"),
        trainer_last_cycle=Gauge("prefstream_trainer_last_cycle_timestamp_seconds", "End of the last cycle"),
        trainer_watch=Gauge("prefstream_trainer_watch", "Live watch of the serving model since it began serving: "
                            "pairs, serving_accuracy, count_accuracy, log_evidence (demotes at log 1/alpha)",
                            ["quantity"]),
        trainer_counts_rebuilt=Counter("prefstream_trainer_counts_rebuilt",
                                       "Users whose kept win counts a trainer cycle found stale and rebuilt"),
        gateway_requests=Counter("prefstream_gateway_requests", "Gateway requests", ["endpoint", "code"]),
        gateway_latency=Histogram("prefstream_gateway_request_seconds", "Gateway request time", ["endpoint"], **h),
        gateway_route=Histogram("prefstream_gateway_route_seconds", "Gateway wait for a decision", **h),
        gateway_first_byte=Histogram("prefstream_gateway_first_byte_seconds", "Request to first upstream byte", **h),
        gateway_upstream_errors=Counter("prefstream_gateway_upstream_errors", "Upstream failures",
                                        ["llm", "stage"]),
        gateway_turns=Counter("prefstream_gateway_turns", "Chat turns the gateway published", ["outcome"]),
    )


def reason_class(reason: str) -> str:
    """A dead letter's reason as a bounded label."""
    r = reason.lower()
    for prefix, name in (("message is", "malformed"), ("invalid ", "schema"), ("unknown llm", "unknown_llm"),
                         ("text longer", "too_long"), ("could not parse", "error")):
        if r.startswith(prefix):
            return name
    return "other"


def version_number(version: str | None) -> int:
    """'v0007' -> 7; None (counting serves) -> 0."""
    digits = "".join(ch for ch in (version or "") if ch.isdigit())
    return int(digits) if digits else 0


def metrics_port_for(base: int, app: str, index: int = 0) -> int:
    """The /metrics port of ``app`` (``index``: the router worker's), or 0 when metrics are off."""
    return 0 if base == 0 else base + PORT_OFFSETS[app] + index


def serve_metrics(port: int) -> int:
    """Expose this process's metrics on ``port`` (0: do nothing). A port in use is a warning, never a failure
    of the app: metrics must not take routing down. Returns the port serving, or 0."""
    if port == 0:
        return 0
    from prometheus_client import start_http_server

    metrics()
    try:
        start_http_server(port)
    except OSError as exc:
        log.warning("metrics not served on port %d: %s (set PREFSTREAM_METRICS_PORT)", port, exc)
        return 0
    return port
