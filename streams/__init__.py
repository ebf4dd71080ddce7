"""Kafka side of prefstream: event schemas, the Faust ingest app, the route path and the client SDK."""
