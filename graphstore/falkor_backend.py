"""FalkorDB backend (local default and CI) through the official ``falkordb`` client."""

from __future__ import annotations

from urllib.parse import urlparse

from graphstore import cypher
from graphstore.base import GraphStore, check_query


class FalkorStore(GraphStore):
    def __init__(self, uri: str, graph_name: str, user: str | None = None, password: str | None = None,
                 batch_size: int = 1000) -> None:
        from falkordb import FalkorDB

        super().__init__(batch_size)
        u = urlparse(uri)
        if u.scheme not in ("redis", "rediss", "falkor", "falkordb", ""):
            raise ValueError(f"FalkorDB needs a redis://host:port URI, got {uri!r}")
        self.db = FalkorDB(host=u.hostname or "127.0.0.1", port=u.port or 6379, username=user or u.username,
                           password=password or u.password, ssl=u.scheme == "rediss")
        self.graph = self.db.select_graph(graph_name)

    def _write(self, q: str, params: dict) -> list[list]:
        return self.graph.query(check_query(q), params).result_set

    def _read(self, q: str, params: dict) -> list[list]:
        from redis.exceptions import ResponseError

        try:
            return self.graph.ro_query(check_query(q), params).result_set
        except ResponseError as exc:  # the graph key does not exist until something is written: it is empty
            if "empty key" in str(exc):
                return []
            raise

    def ensure_schema(self) -> None:
        from redis.exceptions import ResponseError

        for ddl in cypher.FALKOR_DDL:
            try:
                self.graph.query(check_query(ddl))
            except ResponseError as exc:  # FalkorDB has no IF NOT EXISTS; an existing index is fine
                if "already indexed" not in str(exc).lower():
                    raise

    def clear(self) -> None:
        self._write(cypher.CLEAR, {})

    def close(self) -> None:
        self.db.connection.close()
