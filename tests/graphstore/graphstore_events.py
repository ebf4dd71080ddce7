"""Event builders for the graph store tests (deterministic embeddings, so tests never load the encoder)."""

from __future__ import annotations

import hashlib

import numpy as np

from prefstream.events import ChatTurn, Feedback, LLMRegistered, RouteDecision

D = 384

# --- event builders ---------------------------------------------------------------------------------
def emb(text: str) -> np.ndarray:
    """A deterministic unit vector per text (tests never load the encoder)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).normal(size=D).astype(np.float32)
    return v / np.linalg.norm(v)


def turn(tid: str, user: str = "u1", conv: str = "c1", idx: int = 0, ts: int = 1000, llm: str = "m1",
         query: str | None = None, response: str = "an answer") -> ChatTurn:
    return ChatTurn(event_id=tid, user_id=user, conversation_id=conv, turn_index=idx, timestamp=ts,
                    query=query if query is not None else f"question {conv} {idx}", llm_id=llm, response=response)


def with_emb(*turns: ChatTurn, response_emb: bool = False):
    return [(t, emb(t.query), emb(t.response) if response_emb else None) for t in turns]


def thumbs(fid: str, tid: str, up: bool, ts: int, user: str = "u1") -> Feedback:
    return Feedback(event_id=fid, user_id=user, turn_id=tid, timestamp=ts, signal={"kind": "thumbs", "up": up})


def score(fid: str, tid: str, value: float, ts: int, user: str = "u1") -> Feedback:
    return Feedback(event_id=fid, user_id=user, turn_id=tid, timestamp=ts,
                    signal={"kind": "score", "score": value, "scale_min": 1.0, "scale_max": 10.0})


def pairwise(fid: str, tid: str, rejected: str, ts: int, preferred_llm: str = "m1", rejected_llm: str = "m2",
             tie: bool = False, user: str = "u1") -> Feedback:
    return Feedback(event_id=fid, user_id=user, turn_id=tid, timestamp=ts,
                    signal={"kind": "pairwise", "preferred_llm_id": preferred_llm, "rejected_llm_id": rejected_llm,
                            "rejected_turn_id": rejected, "tie": tie})


def llm(llm_id: str, ts: int = 1, description: str | None = None, price_in: float = 1.0, price_out: float = 2.0):
    desc = description or f"model {llm_id}"
    return (LLMRegistered(llm_id=llm_id, description=desc, price_in=price_in, price_out=price_out, timestamp=ts),
            emb(desc))


def decision(rid: str, user: str | None = "u1", chosen: str | None = "m1", turns: list[str] | None = None,
             ts: int = 5000, **kw) -> RouteDecision:
    return RouteDecision(request_id=rid, user_id=user, chosen_llm_id=chosen, turn_ids=turns or [], timestamp=ts,
                         scores=kw.pop("scores", {"m1": 0.7, "m2": 0.2}), model_version=kw.pop("model_version", "v1"),
                         latency_ms=kw.pop("latency_ms", 3.5), **kw)


def raw_write(store, q: str) -> None:
    """Cypher outside graphstore.cypher, for a test that must write what the store never writes itself."""
    if hasattr(store, "driver"):
        store.driver.execute_query(q, database_=store.database)
    else:
        store.graph.query(q)
