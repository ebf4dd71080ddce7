"""The graph store: prefstream's memory of users, LLMs, queries, responses, turns and decisions."""
