"""The roof: the local stack (`prefstream up`), its health checks, the demo and the `prefstream` command line.

It imports every other package; nothing imports it.
"""
