"""A fresh graph store per test, on every backend we can reach.

FalkorDB always runs (the session's private server from tests/conftest.py). Neo4j runs when
PREFSTREAM_NEO4J_URI is set (e.g. the compose file in deploy/neo4j); credentials come from
PREFSTREAM_NEO4J_USER / PREFSTREAM_NEO4J_PASSWORD (or NEO4J_USER / NEO4J_PASSWORD, or user:password@ in the
URI) and the database from PREFSTREAM_NEO4J_DATABASE (default neo4j), which each test clears.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlparse, urlunparse

import pytest

from prefstream.config import Settings

NEO4J_URI = os.environ.get("PREFSTREAM_NEO4J_URI")
NEO4J_SKIP = ("Neo4j contract run skipped: set PREFSTREAM_NEO4J_URI=bolt://host:7687 (plus PREFSTREAM_NEO4J_USER / "
              "PREFSTREAM_NEO4J_PASSWORD) to run it against a Neo4j 5 server, see deploy/neo4j/README.md")
BACKENDS = ["falkordb", pytest.param("neo4j", marks=[pytest.mark.neo4j,
                                                     pytest.mark.skipif(not NEO4J_URI, reason=NEO4J_SKIP)])]


def neo4j_settings() -> Settings:
    u = urlparse(NEO4J_URI or "")
    user = os.environ.get("PREFSTREAM_NEO4J_USER") or os.environ.get("NEO4J_USER") or u.username or "neo4j"
    password = os.environ.get("PREFSTREAM_NEO4J_PASSWORD") or os.environ.get("NEO4J_PASSWORD") or u.password
    bare = urlunparse(u._replace(netloc=u.hostname + (f":{u.port}" if u.port else "")))
    return Settings(graph_backend="neo4j", graph_uri=bare, graph_user=user, graph_password=password,
                    graph_name=os.environ.get("PREFSTREAM_NEO4J_DATABASE", "neo4j"), graph_batch_size=7)


@pytest.fixture(params=BACKENDS)
def store_settings(request) -> Settings:
    if request.param == "neo4j":
        return neo4j_settings()
    port = request.getfixturevalue("graph_server")
    # a small batch size so multi-batch paths run in every test
    return Settings(graph_uri=f"redis://127.0.0.1:{port}", graph_name=f"gs{uuid.uuid4().hex[:10]}",
                    graph_batch_size=7)


@pytest.fixture
def store(store_settings):
    from graphstore import open_store

    s = open_store(store_settings)
    s.clear()
    try:
        yield s
    finally:
        s.clear()
        s.close()


