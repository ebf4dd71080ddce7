"""The graph store: prefstream's memory of users, LLMs, queries, responses, turns and decisions.

``open_store(settings)`` picks the backend named by ``settings.graph_backend``: FalkorDB (local default,
CI) or Neo4j 5 (production). Both implement :class:`graphstore.base.GraphStore` with the same Cypher text.

Choices worth knowing (see the modules for why):
- Every node is MERGEd on its business key (``schema.KEYS``); first-seen values win (ON CREATE SET), so a
  replay changes nothing. Turn edges (FOLLOWS included) are created in the same query as the turn, so a
  stored turn always has them.
- Feedback MERGEs the Response it rates (keyed by the turn's event id), so feedback that comes first is
  applied at once and found by its turn later; the latest feedback by (timestamp, event id) sets the rating.
- FOLLOWS links a turn to every stored turn at turn_index - 1 of the same user's conversation, whichever
  arrives first; ``UserSubgraph.prev`` picks the same LLM's previous answer, else the earliest.
- ``k`` counts Turn nodes (one per answering LLM), newest k, returned oldest first.
- Embeddings are stored as base64 float32 strings (``codec``): ~20x cheaper to read than list properties.
  Query nodes never change once created, so reads return only query keys and the store keeps an LRU of
  decoded query embeddings (``GraphStore.query_embeddings``), reading missing ones by key in one query.
- All Cypher lives in ``cypher`` as constants with $parameters; backends refuse any other text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from graphstore.base import GraphStore
    from prefstream.config import Settings

__all__ = ["open_store", "GraphStore"]


def open_store(settings: "Settings", ensure_schema: bool = True) -> "GraphStore":
    """A connected store for ``settings`` (schema ensured unless told otherwise)."""
    password = settings.graph_password.get_secret_value() if settings.graph_password else None
    kw = dict(user=settings.graph_user, password=password, batch_size=settings.graph_batch_size)
    if settings.graph_backend == "neo4j":
        from graphstore.neo4j_backend import Neo4jStore

        store: GraphStore = Neo4jStore(settings.graph_uri, settings.graph_name, **kw)
    else:
        from graphstore.falkor_backend import FalkorStore

        store = FalkorStore(settings.graph_uri, settings.graph_name, **kw)
    if ensure_schema:
        store.ensure_schema()
    return store


def __getattr__(name: str):  # GraphStore without importing the backends' clients at package import
    if name == "GraphStore":
        from graphstore.base import GraphStore

        return GraphStore
    raise AttributeError(name)
