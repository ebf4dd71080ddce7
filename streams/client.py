"""The prefstream client SDK (kafka-python): publish events, and route a query with one call.

    from streams.client import PrefstreamClient
    with PrefstreamClient() as ps:                       # settings from PREFSTREAM_* env
        ps.register_llm("gpt-small", "fast and cheap", price_in=0.1, price_out=0.2)
        ps.publish_turn(user_id="alice", conversation_id="c1", turn_index=0, query="2+2?",
                        llm_id="gpt-small", response="4")
        decision = ps.route("alice", "Prove Fermat's last theorem", timeout=5)
        print(decision.chosen_llm_id, decision.scores)
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from concurrent.futures import Future
from typing import Any

from prefstream.config import Settings, get_settings
from prefstream.options import with_stack_generations
from prefstream.events import (
    ChatTurn, Event, Feedback, InvalidEvent, LLMRegistered, Pairwise, RouteDecision, RouteRequest, Score, Thumbs,
    now_ms, parse_event,
)
from streams import dead_letter_topics, event_topics, route_topics
from streams.kafka_config import consumer_kwargs, producer_kwargs


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class RouteTimeout(TimeoutError):
    pass


class PrefstreamClient:
    """Thread-safe; one background thread reads the decisions topic and completes waiting requests."""

    def __init__(self, settings: Settings | None = None):
        from kafka import KafkaProducer

        self.s = settings or with_stack_generations(get_settings())
        # input events go to the topics of the current event generation when those are on (event_topics), route
        # requests to those of their route generation: a producer each, renewed per generation
        self._producer = route_topics.GenerationProducer(self.s, lambda: event_topics.current(self.s),
                                                         **producer_kwargs(self.s)) \
            if event_topics.enabled(self.s) else KafkaProducer(**producer_kwargs(self.s))
        self._route_producer = route_topics.GenerationProducer(self.s, **producer_kwargs(self.s)) \
            if route_topics.enabled(self.s) else self._producer
        self._pending: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._reader_ready = threading.Event()
        self._closed = threading.Event()

    # --- publishing ------------------------------------------------------------------------
    def topic_for(self, event: Event) -> tuple[str, str]:
        """(topic, partition key) for an input event; keyed by user so a user's events stay in order."""
        t = self.s.topics
        if isinstance(event, ChatTurn):
            return event_topics.topic(self.s, t.turns), event.user_id
        if isinstance(event, Feedback):
            return event_topics.topic(self.s, t.feedback), event.user_id
        if isinstance(event, LLMRegistered):
            return t.catalog, event.llm_id
        if isinstance(event, RouteRequest):
            return route_topics.request_topic(self.s, event.timestamp), event.user_id
        raise TypeError(f"{type(event).__name__} is not an input event")

    def publish(self, event: Event, wait: bool = False) -> Event:
        topic, key = self.topic_for(event)
        producer = self._route_producer if isinstance(event, RouteRequest) else self._producer
        fut = producer.send(topic, key=key.encode(), value=event.to_bytes())
        if wait:
            fut.get(timeout=30)
        return event

    def publish_raw(self, topic: str, value: bytes, key: str | None = None) -> None:
        """Send bytes as they are (for replays and tests of the dead-letter path); to the current generation of the
        turns, feedback or dead-letter topic when that topic has generations."""
        topic = dead_letter_topics.topic(self.s) if topic == self.s.topics.dead_letter \
            else event_topics.topic(self.s, topic)
        self._producer.send(topic, key=key.encode() if key else None, value=value)

    def flush(self, timeout: float | None = 30) -> None:
        self._producer.flush(timeout=timeout)
        if self._route_producer is not self._producer:
            self._route_producer.flush(timeout=timeout)

    def publish_turn(self, *, user_id: str, conversation_id: str, turn_index: int, query: str, llm_id: str,
                     response: str, event_id: str | None = None, timestamp: int | None = None) -> ChatTurn:
        return self.publish(ChatTurn(event_id=event_id or new_id("turn"), user_id=user_id,
                                     conversation_id=conversation_id, turn_index=turn_index,
                                     timestamp=timestamp if timestamp is not None else now_ms(),
                                     query=query, llm_id=llm_id, response=response))

    def publish_feedback(self, *, user_id: str, turn_id: str, thumbs_up: bool | None = None,
                         score: float | None = None, scale: tuple[float, float] = (1.0, 10.0),
                         preferred_llm_id: str | None = None, rejected_llm_id: str | None = None,
                         rejected_turn_id: str | None = None, tie: bool = False,
                         event_id: str | None = None, timestamp: int | None = None) -> Feedback:
        """Exactly one kind: ``thumbs_up``, ``score`` (on ``scale``), or the pairwise fields."""
        kinds = [thumbs_up is not None, score is not None, rejected_turn_id is not None]
        if sum(kinds) != 1:
            raise ValueError("give exactly one of thumbs_up, score, or a pairwise preference")
        if thumbs_up is not None:
            signal: Any = Thumbs(up=thumbs_up)
        elif score is not None:
            signal = Score(score=float(score), scale_min=float(scale[0]), scale_max=float(scale[1]))
        else:
            signal = Pairwise(preferred_llm_id=preferred_llm_id, rejected_llm_id=rejected_llm_id,
                              rejected_turn_id=rejected_turn_id, tie=tie)
        return self.publish(Feedback(event_id=event_id or new_id("fb"), user_id=user_id, turn_id=turn_id,
                                     timestamp=timestamp if timestamp is not None else now_ms(), signal=signal))

    def register_llm(self, llm_id: str, description: str, price_in: float, price_out: float) -> LLMRegistered:
        return self.publish(LLMRegistered(llm_id=llm_id, description=description, price_in=float(price_in),
                                          price_out=float(price_out)), wait=True)

    # --- routing ---------------------------------------------------------------------------
    def route_async(self, user_id: str, query: str, candidates: list[str] | None = None,
                    conversation_id: str | None = None, budget: float | None = None,
                    request_id: str | None = None, deadline_ms: int | None = None) -> Future:
        """Publish a RouteRequest; the returned future completes with its RouteDecision."""
        self._ensure_reader()
        req = RouteRequest(request_id=request_id or new_id("req"), user_id=user_id, query=query,
                           candidates=candidates, conversation_id=conversation_id,
                           budget=float(budget) if budget is not None else None, deadline_ms=deadline_ms)
        fut: Future = Future()
        fut.request = req  # type: ignore[attr-defined]
        with self._lock:
            self._pending[req.request_id] = fut
        self.publish(req)  # linger_ms=0: sent at once, no flush (a flush per request costs a round trip)
        return fut

    def expect(self, request_id: str) -> Future:
        """A future for the reply to a request published by other means (e.g. raw bytes)."""
        self._ensure_reader()
        fut: Future = Future()
        with self._lock:
            self._pending[request_id] = fut
        return fut

    def forget(self, request_id: str) -> None:
        """Stop waiting for a request's reply (its caller gave up)."""
        with self._lock:
            self._pending.pop(request_id, None)

    def route(self, user_id: str, query: str, candidates: list[str] | None = None,
              conversation_id: str | None = None, budget: float | None = None, timeout: float | None = None,
              deadline_ms: int | None = None) -> RouteDecision:
        """The decision for one request. ``timeout`` defaults to twice the deadline plus 2 s: a router past the
        deadline still answers (from its prior, flagged ``shed``), so waiting much longer means no router."""
        if timeout is None:
            timeout = 2 * (deadline_ms or self.s.route_deadline_ms) / 1000 + 2.0
        fut = self.route_async(user_id, query, candidates, conversation_id, budget, deadline_ms=deadline_ms)
        try:
            return fut.result(timeout=timeout)
        except TimeoutError:
            with self._lock:
                self._pending.pop(fut.request.request_id, None)  # type: ignore[attr-defined]
            raise RouteTimeout(f"no decision for {fut.request.request_id} within {timeout} s; "  # type: ignore
                               "is the router running (`prefstream up`)?") from None

    def _ensure_reader(self) -> None:
        with self._lock:
            if self._reader is None:
                self._reader = threading.Thread(target=self._read_decisions, name="decisions", daemon=True)
                self._reader.start()
        if not self._reader_ready.wait(timeout=30):
            raise RuntimeError("could not attach to the decisions topic within 30 s")

    def _read_decisions(self) -> None:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(**consumer_kwargs(self.s, group_id=None))
        # Only replies to requests sent from now on matter. The local broker's end offsets can lag (they
        # re-read old replies, which the request-id match ignores), so this never skips a new reply.
        gen = route_topics.follow_replies(self.s, consumer, self._closed, at_end=True)
        self._reader_ready.set()
        try:
            while not self._closed.is_set():
                if gen is not None and route_topics.current(self.s) != gen:  # a new generation's topics
                    gen = route_topics.follow_replies(self.s, consumer, self._closed)
                for records in consumer.poll(timeout_ms=100).values():
                    for r in records:
                        try:
                            d = parse_event(r.value, RouteDecision)
                        except InvalidEvent:
                            continue
                        with self._lock:
                            fut = self._pending.pop(d.request_id, None)
                        if fut is not None and not fut.done():
                            fut.set_result(d)
        finally:
            consumer.close()

    def close(self) -> None:
        self._closed.set()
        self.flush(timeout=10)
        self._producer.close()
        if self._route_producer is not self._producer:
            self._route_producer.close(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=5)

    def __enter__(self) -> "PrefstreamClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncPrefstreamClient:
    """asyncio face of PrefstreamClient: ``decision = await client.route(user, query)``."""

    def __init__(self, settings: Settings | None = None):
        self._c = PrefstreamClient(settings)

    async def route(self, user_id: str, query: str, candidates: list[str] | None = None,
                    conversation_id: str | None = None, budget: float | None = None,
                    timeout: float = 10.0) -> RouteDecision:
        loop = asyncio.get_running_loop()
        fut = await loop.run_in_executor(None, lambda: self._c.route_async(user_id, query, candidates,
                                                                          conversation_id, budget))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)
        except asyncio.TimeoutError:
            raise RouteTimeout(f"no decision within {timeout} s") from None

    async def publish_turn(self, **kw) -> ChatTurn:
        return await asyncio.get_running_loop().run_in_executor(None, lambda: self._c.publish_turn(**kw))

    async def publish_feedback(self, **kw) -> Feedback:
        return await asyncio.get_running_loop().run_in_executor(None, lambda: self._c.publish_feedback(**kw))

    async def register_llm(self, *a, **kw) -> LLMRegistered:
        return await asyncio.get_running_loop().run_in_executor(None, lambda: self._c.register_llm(*a, **kw))

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._c.close)

    async def __aenter__(self) -> "AsyncPrefstreamClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
