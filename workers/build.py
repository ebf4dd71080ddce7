"""How a router's decision engine is built from the settings (the graph store, encoder, model registry and
catalog copies it needs), for the in-process loop and the Ray actors alike."""

from __future__ import annotations

import logging

from prefstream.config import Settings


def build_engine(s: Settings, threads: int | None = None):
    """The decision engine on the configured graph store, encoder and model registry.

    Torch (once a trained model serves; and the encoder on the torch backend) gets ``router_threads`` threads
    (default 1): on a small shared machine more threads thrash. The ONNX encoder runs ``router_encoder_threads``
    texts at once. Torch is not imported while the count-based scorer serves.
    The graph store's schema is ensured here, once per router, and the encoder's embedding space claimed: a router
    whose encoder differs from the graph's query vectors refuses to start (graphstore.base.EmbeddingSpaceMismatch)
    rather than store and read vectors of two spaces."""
    from graphstore import open_store
    from graphstore.base import EmbeddingSpaceMismatch
    from prefstream.encoder import TextEncoder
    from workers.catalog import CatalogCache, catalog_from_topic
    from workers.engine import RouteEngine
    from workers.models import ModelSource

    store = open_store(s, ensure_schema=False)
    threads = threads or s.router_threads
    encoder = TextEncoder.from_settings(s, s.router_encoder_threads if s.encoder_backend == "onnx" else threads)
    try:
        store.ensure_schema()
        store.claim_embedding_space(encoder.space, encoder.encode)
    except EmbeddingSpaceMismatch:
        raise
    except Exception as exc:  # the graph down at start must not stop the router: it answers flagged fallback
        logging.getLogger(__name__).warning("graph store unreachable at start (%s)", exc)
    if encoder.backend == "torch":
        import torch

        torch.set_num_threads(threads)
    models = ModelSource(s.model_dir, count_source=lambda: store.global_win_counts(s.count_users),
                         count_every_s=s.count_refresh_s, torch_threads=threads,
                         space=encoder.space).start()
    return RouteEngine(store, encoder, models, history_turns=s.history_turns,
                       deadline_ms=s.route_deadline_ms, queue_target=s.route_queue_target,
                       catalog_cache=CatalogCache(s.run_dir / "catalog.json"),
                       catalog_source=lambda: catalog_from_topic(s, encoder))
