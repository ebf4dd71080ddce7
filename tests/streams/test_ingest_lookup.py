"""The ingest embeds only query texts the graph does not hold yet (real FalkorDB, counting encoder)."""

from __future__ import annotations

import numpy as np

from streams.ingest import Ingestor, RawMessage
from streams.events import ChatTurn, LLMRegistered

D = 384


class CountingEncoder:
    """TextEncoder's contract (cache lookup, then the model) with a model that records what it embeds."""

    def __init__(self):
        self.embedded: list[str] = []

    def encode(self, texts, lookup=None):
        found = lookup(texts) if lookup else [None] * len(texts)
        out = []
        for t, v in zip(texts, found):
            if v is None:
                self.embedded.append(t)
                v = np.random.default_rng(len(t)).normal(size=D).astype(np.float32)
            out.append(v)
        return np.stack(out)


def raw(e) -> RawMessage:
    return RawMessage(e.model_dump_json().encode(), "chat.turns")


def test_a_routed_or_earlier_query_is_not_embedded_again(store):
    enc = CountingEncoder()
    ing = Ingestor(store, enc, unknown_llm_grace_s=0)
    ing.llms([RawMessage(LLMRegistered(llm_id="m1", description="a model", price_in=1, price_out=1)
                         .model_dump_json().encode(), "llm.catalog")])
    routed = np.full(D, 0.25, np.float32)
    store.upsert_queries([("asked at routing time", routed)])  # what the router writes for a new request text

    turns = [ChatTurn(event_id=f"t{i}", user_id="u1", conversation_id="c1", turn_index=i, timestamp=1000 + i,
                      query=q, llm_id="m1", response="r") for i, q in enumerate(["asked at routing time", "fresh"])]
    assert ing.turns([raw(t) for t in turns]).accepted == 2
    assert enc.embedded == ["a model", "fresh"]
    sub = store.user_subgraph("u1", 10)
    np.testing.assert_allclose(sub.query_emb[0], routed)  # the stored vector, not a new one

    enc2 = CountingEncoder()  # e.g. a restarted worker replaying the topic: its caches are empty
    again = ChatTurn(event_id="t9", user_id="u2", conversation_id="c9", turn_index=0, timestamp=2000, query="fresh",
                     llm_id="m1", response="r")
    assert Ingestor(store, enc2, unknown_llm_grace_s=0).turns([raw(again)]).accepted == 1
    assert enc2.embedded == []
