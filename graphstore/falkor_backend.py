"""FalkorDB backend (local default and CI) through the official ``falkordb`` client's connection.

Queries go through the client's connection pool but not through its ``Graph.query`` helpers, for speed only
(bench/graph_store.py measures it): the generic parameter serialiser (``falkordb.helpers.stringify_param_value``)
and result parser (``falkordb.query_result``) were about a third of ingest time and half of a batched
subgraph read. Each thread also keeps one connection of the pool for itself: redis-py's per-command pool
checkout and bookkeeping were about a fifth of a single-user subgraph read (0.17 of 0.86 ms, interleaved
one-off timing). Connection errors are retried as redis-py does (the connection's own ``Retry``).

``params_header`` below produces byte for byte the same ``CYPHER name=value ...`` header as the client
(strings quoted and escaped the same way, values only ever as parameters), and ``parse_cell`` reads the same
``--compact`` result format, handing anything but plain scalars and lists back to the client's parser.
"""

from __future__ import annotations

import threading
from urllib.parse import urlparse

from graphstore import cypher
from graphstore.base import GraphStore, check_query


def _quote(v: str) -> str:
    # falkordb.helpers.quote_string: backslash and double quote escaped, the rest verbatim
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


_KEY_CACHE: dict[str, str] = {}


def _key(k) -> str:
    """`key`: for a map key, as the client writes it (and refuses what it refuses)."""
    if type(k) is str:
        got = _KEY_CACHE.get(k)
        if got is not None:
            return got
    key_str = k.decode() if isinstance(k, bytes) else str(k)
    if key_str == "":
        raise ValueError("Cypher map key cannot be empty")
    if "`" in key_str:
        raise ValueError(f"Cypher map key cannot contain a backtick: {key_str!r} (FalkorDB does not support "
                         "escaped backticks in identifiers)")
    out = f"`{key_str}`:"
    if type(k) is str and len(_KEY_CACHE) < 10_000:
        _KEY_CACHE[k] = out
    return out


def param_value(v) -> str:
    """``falkordb.helpers.stringify_param_value(v)``, same output, a few times faster on rows of maps."""
    t = type(v)
    if t is str:
        return _quote(v)
    if v is None:
        return "null"
    if t is int or t is float or t is bool:
        return str(v)
    if t is dict:
        return "{" + ",".join([_key(k) + param_value(x) for k, x in v.items()]) + "}"
    if t is list or t is tuple:
        return "[" + ",".join([param_value(x) for x in v]) + "]"
    from falkordb.helpers import stringify_param_value  # subclasses, bytes, anything unusual: the client's rules

    return stringify_param_value(v)


def params_header(params: dict | None) -> str:
    """The ``CYPHER k=v ...`` prefix, as ``falkordb.Graph._build_params_header`` writes it."""
    if params is None:
        return ""
    if not isinstance(params, dict):
        raise TypeError("'params' must be a dict")
    out = ["CYPHER "]
    for key, value in params.items():
        key_str = key.decode() if isinstance(key, bytes) else str(key)
        if key_str == "":
            raise ValueError("Cypher parameter name cannot be empty")
        if "`" in key_str:
            raise ValueError(f"Cypher parameter name cannot contain a backtick: {key_str!r}")
        out.append(f"`{key_str}`={param_value(value)} ")
    return "".join(out)


def parse_cell(cell, graph):
    """One value of a ``--compact`` result: [type, value] (see falkordb.query_result.ResultSetScalarTypes)."""
    t = cell[0]
    if t == 2:  # string (already decoded: the client's connection uses decode_responses=True)
        v = cell[1]
        return v if type(v) is str else (v.decode() if isinstance(v, bytes) else str(v))
    if t == 3:  # integer
        return int(cell[1])
    if t == 1:  # null
        return None
    if t == 5:  # double
        return float(cell[1])
    if t == 6:  # array
        return [parse_cell(c, graph) for c in cell[1]]
    if t == 4:  # boolean
        v = cell[1]
        return (v.decode() if isinstance(v, bytes) else v) == "true"
    from falkordb.query_result import parse_scalar  # nodes, edges, maps, temporal values: the client's parser

    return parse_scalar(cell, graph)


def parse_rows(rows: list, graph) -> list[list]:
    """Result rows as lists of Python values. Nulls, strings and integers arrive ready (hiredis gives None, str
    under the client's decode_responses=True, and int), so a row made only of those is split in C (zip);
    only other cells (doubles, booleans, arrays, ...) go through ``parse_cell``."""
    out = []
    for row in rows:
        if not row:
            out.append([])
            continue
        types, values = zip(*row)
        values = list(values)
        if max(types) > 3 or min(types) < 1:
            for i, t in enumerate(types):
                if t > 3 or t < 1:
                    values[i] = parse_cell(row[i], graph)
        out.append(values)
    return out


class FalkorStore(GraphStore):
    LIST_INDEXES = cypher.FALKOR_LIST_INDEXES

    def __init__(self, uri: str, graph_name: str, user: str | None = None, password: str | None = None,
                 batch_size: int = 1000, emb_cache_size: int | None = None) -> None:
        from falkordb import FalkorDB

        super().__init__(batch_size, emb_cache_size)
        u = urlparse(uri)
        if u.scheme not in ("redis", "rediss", "falkor", "falkordb", ""):
            raise ValueError(f"FalkorDB needs a redis://host:port URI, got {uri!r}")
        self.db = FalkorDB(host=u.hostname or "127.0.0.1", port=u.port or 6379, username=user or u.username,
                           password=password or u.password, ssl=u.scheme == "rediss")
        self.graph = self.db.select_graph(graph_name)
        self._local = threading.local()

    def _command(self, *args):
        """One command on this thread's own connection; connection errors retried as the client would."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.db.connection.connection_pool.get_connection()

        def once():
            conn.send_command(*args)
            return conn.read_response()

        return conn.retry.call_with_retry(once, lambda _error: conn.disconnect())

    def _run(self, cmd: str, q: str, params: dict | None) -> list[list]:
        from redis.exceptions import ResponseError

        q = check_query(q)
        # no graph version is sent, so the server never answers with a schema-version mismatch
        response = self._command(cmd, self.graph.name, params_header(params) + q, "--compact")
        if response and isinstance(response[0], ResponseError):
            raise response[0]
        if isinstance(response[-1], ResponseError):  # a run-time error ends the reply
            raise response[-1]
        if len(response) < 3 or not response[0]:  # statistics only: no RETURN
            return []
        return parse_rows(response[1], self.graph)

    def _write(self, q: str, params: dict) -> list[list]:
        return self._run("GRAPH.QUERY", q, params)

    def _read(self, q: str, params: dict) -> list[list]:
        from redis.exceptions import ResponseError

        try:
            return self._run("GRAPH.RO_QUERY", q, params)
        except ResponseError as exc:  # the graph key does not exist until something is written: it is empty
            if "empty key" in str(exc):
                return []
            raise

    def _create_schema(self) -> bool:
        from redis.exceptions import ResponseError

        created = False
        for ddl in cypher.FALKOR_DDL:
            try:
                self.graph.query(check_query(ddl))
                created = True
            except ResponseError as exc:  # FalkorDB has no IF NOT EXISTS; an existing index is fine
                if "already indexed" not in str(exc).lower():
                    raise
        if created:
            self._compact_aof()
        return created

    def _compact_aof(self, timeout_s: float = 30.0) -> None:
        """Fold the index DDL into the append-only file's snapshot base.

        When FalkorDB 4.16 replays the AOF on restart, an index whose ``CREATE INDEX`` sits in the incremental
        part is not used by the MERGEs replayed after it (indexing is asynchronous), so every MERGE scans its
        label (a replay then runs at full CPU for far longer than the same writes took). An index in the
        snapshot base is loaded ready. So after creating indexes, rewrite the AOF once.
        """
        import time

        from redis.exceptions import ResponseError

        conn = self.db.connection
        if int(conn.info("persistence").get("aof_enabled", 0)) != 1:
            return
        try:
            conn.execute_command("BGREWRITEAOF")
        except ResponseError as exc:  # another store's rewrite is running: waiting for it is enough
            if "already in progress" not in str(exc):
                raise
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = conn.info("persistence")
            if not int(info.get("aof_rewrite_in_progress", 0)) and not int(info.get("aof_rewrite_scheduled", 0)):
                return
            time.sleep(0.05)
        raise TimeoutError(f"FalkorDB AOF rewrite still running after {timeout_s:.0f} s")

    def clear(self) -> None:
        self._write(cypher.CLEAR, {})
        self._forget_cached()

    def close(self) -> None:
        self.db.connection.close()
