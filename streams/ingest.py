"""validate -> embed -> upsert, one batch of raw messages at a time (what the Faust agents run).

Kept free of Faust so it can be tested and benchmarked on its own. Bad messages come back as
DeadLetter events for the caller to publish; they never stop the batch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from graphstore.schema import LLMInfo
from prefstream.config import Settings
from prefstream.events import ChatTurn, DeadLetter, Event, Feedback, InvalidEvent, LLMRegistered, parse_event
from prefstream.metrics import metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawMessage:
    value: bytes
    topic: str
    partition: int | None = None
    offset: int | None = None


@dataclass
class BatchResult:
    accepted: int = 0
    dead: list[DeadLetter] = field(default_factory=list)


class IngestStore(Protocol):
    def llm_catalog(self) -> dict[str, LLMInfo]: ...
    def upsert_llms(self, items: list[tuple[LLMRegistered, np.ndarray]]) -> None: ...
    def upsert_turns(self, items: list[tuple[ChatTurn, np.ndarray, np.ndarray | None]]) -> None: ...
    def stored_query_embeddings(self, texts: list[str]) -> list[np.ndarray | None]: ...
    def upsert_feedback(self, items: list[Feedback]) -> None: ...


class Ingestor:
    def __init__(self, store: IngestStore, encoder, max_text_chars: int = 32_000, unknown_llm_grace_s: float = 10.0):
        self.store = store
        self.encoder = encoder
        self.max_text_chars = max_text_chars
        # Turns and catalog arrive on different topics, so a turn may overtake its LLM's registration:
        # wait this long for the catalog to catch up before calling an LLM unknown.
        self.unknown_llm_grace_s = unknown_llm_grace_s
        self._known_llms: set[str] = set()

    def _await_llms(self, wanted: set[str]) -> None:
        deadline = time.monotonic() + self.unknown_llm_grace_s
        while True:
            self._known_llms = set(self.store.llm_catalog())
            if wanted <= self._known_llms or time.monotonic() >= deadline:
                return
            time.sleep(0.2)

    def _parse(self, msgs: list[RawMessage], model: type[Event], result: BatchResult) -> list[tuple[RawMessage, Event]]:
        good = []
        for m in msgs:
            try:
                good.append((m, parse_event(m.value, model)))
            except InvalidEvent as exc:
                result.dead.append(DeadLetter.of(m.topic, m.value, str(exc), m.partition, m.offset))
            except Exception as exc:  # never let one message stop the partition (a poison pill)
                log.exception("unexpected error parsing a message from %s", m.topic)
                self._dead(result, m, f"could not parse the message: {type(exc).__name__}: {exc}")
        return good

    def _dead(self, result: BatchResult, m: RawMessage, reason: str) -> None:
        result.dead.append(DeadLetter.of(m.topic, m.value, reason, m.partition, m.offset))

    def llms(self, msgs: list[RawMessage]) -> BatchResult:
        result = BatchResult()
        good = self._parse(msgs, LLMRegistered, result)
        if good:
            events = [e for _, e in good]
            emb = self.encoder.encode([e.description for e in events])
            self.store.upsert_llms(list(zip(events, emb)))
            self._known_llms.update(e.llm_id for e in events)
            result.accepted = len(good)
        return result

    def turns(self, msgs: list[RawMessage]) -> BatchResult:
        result = BatchResult()
        good = self._parse(msgs, ChatTurn, result)
        unknown = {e.llm_id for _, e in good} - self._known_llms
        if unknown:
            self._await_llms(unknown)
        accepted: list[ChatTurn] = []
        for m, e in good:
            if e.llm_id not in self._known_llms:
                self._dead(result, m, f"unknown llm_id {e.llm_id!r}: publish an LLMRegistered event for it first")
            elif len(e.query) > self.max_text_chars or len(e.response) > self.max_text_chars:
                self._dead(result, m, f"text longer than the configured limit of {self.max_text_chars} characters")
            else:
                accepted.append(e)
        if accepted:
            # a query the graph already holds (routed, or asked before) keeps its stored vector: no encoder run
            t0 = time.perf_counter()
            q = self.encoder.encode([e.query for e in accepted], lookup=self.store.stored_query_embeddings)
            metrics().encoder.labels("ingest").observe(time.perf_counter() - t0)
            self.store.upsert_turns([(e, q[i], None) for i, e in enumerate(accepted)])
        result.accepted = len(accepted)
        return result

    def feedback(self, msgs: list[RawMessage]) -> BatchResult:
        result = BatchResult()
        good = [e for _, e in self._parse(msgs, Feedback, result)]
        if good:
            self.store.upsert_feedback(good)
        result.accepted = len(good)
        return result


def build_ingestor(s: Settings) -> Ingestor:
    """The ingestor on the configured graph store (its schema ensured, once) and encoder. Refuses to start
    (graphstore.base.EmbeddingSpaceMismatch) on a graph whose query vectors are of another encoder's space."""
    from graphstore import open_store
    from prefstream.encoder import TextEncoder

    # one thread by default: the event loop and the broker need the other core
    encoder = TextEncoder.from_settings(s, s.ingest_threads)
    if encoder.backend == "torch":
        import torch

        torch.set_num_threads(s.ingest_threads)
    store = open_store(s)
    store.claim_embedding_space(encoder.space, encoder.encode)
    return Ingestor(store, encoder, s.max_text_chars, s.unknown_llm_grace_s)
