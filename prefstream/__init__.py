"""prefstream: a streaming, personalized LLM router (GMTRouter on Kafka, a Cypher graph store and Ray)."""

__version__ = "0.1.0"
