"""The ingest embeds only query texts the graph does not hold yet (real FalkorDB, fake encoder)."""

from __future__ import annotations

import numpy as np

from fake_encoder import FakeEncoder
from prefstream.events import ChatTurn, LLMRegistered
from streams.ingest import Ingestor, RawMessage

D = 384


def raw(e) -> RawMessage:
    return RawMessage(e.model_dump_json().encode(), "chat.turns")


def test_a_routed_or_earlier_query_is_not_embedded_again(store):
    enc = FakeEncoder(D)
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

    enc2 = FakeEncoder(D)  # e.g. a restarted worker replaying the topic: its caches are empty
    again = ChatTurn(event_id="t9", user_id="u2", conversation_id="c9", turn_index=0, timestamp=2000, query="fresh",
                     llm_id="m1", response="r")
    assert Ingestor(store, enc2, unknown_llm_grace_s=0).turns([raw(again)]).accepted == 1
    assert enc2.embedded == []
