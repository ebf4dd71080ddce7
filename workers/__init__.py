"""Routing: the decision engine, model hot-swap, and the Ray actors that serve it."""
