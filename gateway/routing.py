"""The gateway's routing decision: a RouteRequest on Kafka, answered by the router workers (so every decision is
made and audited where all decisions are), awaited on ``route.decisions``.

The order of LLMs to try is the chosen one, then the other candidates by score (the next-best after an
upstream failure). When no reply arrives within the request's deadline plus a grace period (no router running,
the broker down), the gateway does not fail the request: it tries the candidates in the order of how often the
router chose them lately, flagged ``fallback: gateway``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from prefstream.config import Settings
from prefstream.events import RouteDecision
from prefstream.metrics import metrics

GRACE_S = 1.0  # beyond the deadline: the router replies by then (shed if it must)
RECENT = 1000  # decisions remembered for the gateway's own fallback order


class RouteRefused(ValueError):
    """The router answered with an error (unknown candidate, nothing within the budget, ...)."""


@dataclass
class Route:
    request_id: str
    order: list[str]  # LLMs to try, best first
    model_version: str | None = None
    fallback: str = ""  # "" | "router" (scored without history or model) | "shed" | "gateway" (no decision)
    route_ms: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)


class GatewayRouter:
    def __init__(self, s: Settings, client):
        """``client``: a streams.client.PrefstreamClient (its reader thread completes the decisions)."""
        self.s = s
        self.client = client
        self._recent: deque[str] = deque(maxlen=RECENT)

    async def route(self, user_id: str, query: str, conversation_id: str, candidates: list[str],
                    budget: float | None) -> Route:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        fut = await loop.run_in_executor(None, lambda: self.client.route_async(
            user_id, query, candidates, conversation_id, budget, deadline_ms=self.s.route_deadline_ms))
        request_id = fut.request.request_id
        try:
            d: RouteDecision = await asyncio.wait_for(asyncio.wrap_future(fut),
                                                      self.s.route_deadline_ms / 1000 + GRACE_S)
        except asyncio.TimeoutError:
            self.client.forget(request_id)
            metrics().gateway_route.observe(time.perf_counter() - t0)
            return Route(request_id, self._fallback_order(candidates)[: 1 + self.s.gateway_retries],
                         fallback="gateway", route_ms=(time.perf_counter() - t0) * 1000)
        ms = (time.perf_counter() - t0) * 1000
        metrics().gateway_route.observe(ms / 1000)
        if d.error or d.chosen_llm_id is None:
            raise RouteRefused(d.error or "the router chose no LLM")
        self._recent.append(d.chosen_llm_id)
        rest = sorted((m for m in d.scores if m != d.chosen_llm_id), key=lambda m: -d.scores[m])
        return Route(request_id, [d.chosen_llm_id, *rest][: 1 + self.s.gateway_retries], d.model_version,
                     "shed" if d.shed else "router" if d.fallback else "", ms, dict(d.scores))

    def _fallback_order(self, candidates: list[str]) -> list[str]:
        chosen = Counter(self._recent)
        return sorted(candidates, key=lambda m: -chosen[m])  # stable: ties keep the candidates' order
