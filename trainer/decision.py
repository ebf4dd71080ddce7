"""The decision rule every scorer's scores go through (no torch: the router imports it at start)."""

from __future__ import annotations

from typing import Sequence

from graphstore.schema import LLMInfo


def choose(scores: Sequence[float], candidates: Sequence[LLMInfo]) -> int:
    """The highest score; on a tie, the cheaper LLM."""
    return max(range(len(candidates)), key=lambda j: (scores[j], -candidates[j].price_out))
