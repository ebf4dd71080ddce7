"""Topic generations, shared by the route, input-event and dead-letter topics: ``<base>.g<N>`` names the topic of
generation N of ``base`` (streams/route_topics.py says why a broker without retention needs them)."""

from __future__ import annotations

import re

GENERATION_SUFFIX = re.compile(r"\.g(\d+)$")  #: the ".g<N>" that ends a generation topic's name


def named(base: str, gen: int) -> str:
    return f"{base}.g{gen}"
