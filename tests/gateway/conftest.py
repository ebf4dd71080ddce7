"""The streaming tests' fixtures (topics, graph store, a real ingest worker) for the gateway's tests."""

from tests.streams.conftest import ingest_worker, store, topics  # noqa: F401
