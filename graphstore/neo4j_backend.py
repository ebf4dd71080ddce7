"""Neo4j 5 backend (production) through the official ``neo4j`` driver.

Writes go through ``execute_query`` (a managed transaction with the driver's retries); reads are routed
to readers. ``graph_name`` is the Neo4j database.
"""

from __future__ import annotations

from graphstore import cypher
from graphstore.base import GraphStore, check_query


class Neo4jStore(GraphStore):
    LIST_INDEXES = cypher.NEO4J_LIST_INDEXES

    def __init__(self, uri: str, database: str, user: str | None = None, password: str | None = None,
                 batch_size: int = 1000, emb_cache_size: int | None = None) -> None:
        import neo4j

        super().__init__(batch_size, emb_cache_size)
        auth = (user, password or "") if user else None
        self.driver = neo4j.GraphDatabase.driver(uri, auth=auth)
        self.database = database
        self._read_routing = neo4j.RoutingControl.READ

    def _write(self, q: str, params: dict) -> list[list]:
        records, _, _ = self.driver.execute_query(check_query(q), params, database_=self.database)
        return [list(r.values()) for r in records]

    def _read(self, q: str, params: dict) -> list[list]:
        records, _, _ = self.driver.execute_query(check_query(q), params, database_=self.database,
                                                  routing_=self._read_routing)
        return [list(r.values()) for r in records]

    def _create_schema(self) -> bool:
        for ddl in cypher.NEO4J_DDL:
            self._write(ddl, {})
        return True  # IF NOT EXISTS does not say whether it created anything: assume it did

    def clear(self) -> None:
        self._write(cypher.CLEAR, {})
        self._forget_cached()

    def close(self) -> None:
        self.driver.close()
