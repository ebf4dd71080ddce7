"""Event schemas: valid examples pass; each class of bad input fails with a message naming the problem."""

from __future__ import annotations

import json

import pytest

from prefstream.events import (
    ChatTurn, DeadLetter, Feedback, InvalidEvent, LLMRegistered, Pairwise, RouteDecision, RouteRequest, Score,
    Thumbs, parse_any, parse_event,
)

TURN = {"event_id": "t-1", "user_id": "alice", "conversation_id": "c-1", "turn_index": 0,
        "timestamp": 1_700_000_000_000, "query": "What is 2+2?", "llm_id": "gpt-x", "response": "4"}
FEEDBACK = {"event_id": "f-1", "user_id": "alice", "turn_id": "t-1", "timestamp": 1_700_000_000_500,
            "signal": {"kind": "thumbs", "up": True}}
LLM = {"llm_id": "gpt-x", "description": "A model.", "price_in": 0.2, "price_out": 0.4}
REQUEST = {"request_id": "r-1", "user_id": "alice", "query": "Prove it", "candidates": ["gpt-x", "gpt-y"]}


def raw(d: dict) -> bytes:
    return json.dumps(d).encode()


@pytest.mark.parametrize("model,data", [(ChatTurn, TURN), (Feedback, FEEDBACK), (LLMRegistered, LLM),
                                        (RouteRequest, REQUEST)])
def test_valid_examples_round_trip(model, data):
    event = parse_event(raw(data), model)
    assert parse_event(event.to_bytes(), model) == event
    assert parse_any(event.to_bytes()) == event


@pytest.mark.parametrize("signal,rating", [
    ({"kind": "thumbs", "up": True}, 1.0),
    ({"kind": "thumbs", "up": False}, 0.0),
    ({"kind": "score", "score": 7, "scale_min": 1, "scale_max": 10}, 6 / 9),
    ({"kind": "score", "score": 3.5, "scale_min": 0, "scale_max": 5}, 0.7),
    ({"kind": "pairwise", "preferred_llm_id": "a", "rejected_llm_id": "b", "rejected_turn_id": "t-2"}, 1.0),
    ({"kind": "pairwise", "preferred_llm_id": "a", "rejected_llm_id": "b", "rejected_turn_id": "t-2", "tie": True},
     0.5),
])
def test_feedback_normalizes_to_unit_rating(signal, rating):
    fb = parse_event(raw({**FEEDBACK, "signal": signal}), Feedback)
    assert fb.rating == pytest.approx(rating)
    assert 0.0 <= fb.rating <= 1.0


def test_sent_rating_is_not_trusted():
    fb = parse_event(raw({**FEEDBACK, "rating": 0.0}), Feedback)
    assert fb.rating == 1.0
    assert "rating" not in json.loads(fb.to_bytes())


@pytest.mark.parametrize("model,data,expect", [
    (ChatTurn, {k: v for k, v in TURN.items() if k != "query"}, "query: Field required"),
    (ChatTurn, {**TURN, "turn_index": "0"}, "turn_index: Input should be a valid integer"),
    (ChatTurn, {**TURN, "timestamp": 1.5}, "timestamp"),
    (ChatTurn, {**TURN, "query": "x" * 32_001}, "query: String should have at most 32000 characters"),
    (ChatTurn, {**TURN, "query": ""}, "query: String should have at least 1 character"),
    (ChatTurn, {**TURN, "user_id": "a' OR 1=1 //"}, "user_id: Value error, \"a' OR 1=1 //\" is not a valid id"),
    (ChatTurn, {**TURN, "llm_id": "x})-[:R]->(y"}, "llm_id"),
    (ChatTurn, {**TURN, "extra": 1}, "extra: Extra inputs are not permitted"),
    (Feedback, {**FEEDBACK, "signal": {"kind": "score", "score": 11}}, "outside its scale"),
    (Feedback, {**FEEDBACK, "signal": {"kind": "score", "score": 3, "scale_min": 5, "scale_max": 1}},
     "must be below scale_max"),
    (Feedback, {**FEEDBACK, "signal": {"kind": "stars", "n": 4}}, "does not match any of the expected tags"),
    (Feedback, {**FEEDBACK, "signal": {"kind": "thumbs", "up": "yes"}}, "signal.thumbs.up"),
    (Feedback, {**FEEDBACK, "signal": {"kind": "pairwise", "preferred_llm_id": "a", "rejected_llm_id": "a",
                                       "rejected_turn_id": "t-2"}}, "must differ"),
    (Feedback, {**FEEDBACK, "signal": {"kind": "pairwise", "preferred_llm_id": "a", "rejected_llm_id": "b",
                                       "rejected_turn_id": "t-1"}}, "different turn"),
    (LLMRegistered, {**LLM, "price_in": -1}, "price_in: Input should be greater than or equal to 0"),
    (LLMRegistered, {**LLM, "price_out": "cheap"}, "price_out"),
    (RouteRequest, {**REQUEST, "candidates": []}, "candidates: List should have at least 1 item"),
    (RouteRequest, {**REQUEST, "candidates": ["a", "a"]}, "must not repeat"),
    (RouteRequest, {**REQUEST, "schema_version": 2}, "schema_version: Input should be 1"),
])
def test_bad_input_names_the_problem(model, data, expect):
    with pytest.raises(InvalidEvent) as exc:
        parse_event(raw(data), model)
    assert expect in str(exc.value)
    assert str(exc.value).startswith(f"invalid {model.__name__}")


@pytest.mark.parametrize("payload,expect", [
    (b'{"event_id": "t-1", ', "not valid JSON"),
    (b"\xff\xfe{}", "not valid UTF-8"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"text"', "must be a JSON object"),
    (b"{" + b'"q": "' + b"x" * 300_000 + b'"}', "the limit is"),
])
def test_undecodable_messages(payload, expect):
    with pytest.raises(InvalidEvent, match=expect):
        parse_event(payload, ChatTurn)


def test_parse_any_rejects_unknown_type():
    with pytest.raises(InvalidEvent, match="unknown event type 'nope'"):
        parse_any(b'{"type": "nope"}')


def test_cypher_looking_text_is_just_text():
    text = "MATCH (n) DETACH DELETE n // '; DROP"
    turn = parse_event(raw({**TURN, "query": text, "response": "}) RETURN 1"}), ChatTurn)
    assert turn.query == text


def test_decision_and_dead_letter_round_trip():
    d = RouteDecision(request_id="r-1", user_id="alice", chosen_llm_id="gpt-x", scores={"gpt-x": 0.9},
                      model_version="v1", turn_ids=["t-1"], latency_ms=3.2)
    assert parse_event(d.to_bytes(), RouteDecision) == d
    dl = DeadLetter.of("chat.turns", b"\xff oops", "message is not valid UTF-8", partition=0, offset=7)
    back = parse_event(dl.to_bytes(), DeadLetter)
    assert back.raw == b"\xff oops" and back.reason.startswith("message")


def test_signal_models_are_usable_directly():
    fb = Feedback(event_id="f", user_id="u", turn_id="t", timestamp=1, signal=Score(score=4, scale_min=0, scale_max=8))
    assert fb.rating == 0.5
    assert Feedback(event_id="f", user_id="u", turn_id="t", timestamp=1, signal=Thumbs(up=False)).rating == 0.0
    pw = Pairwise(preferred_llm_id="a", rejected_llm_id="b", rejected_turn_id="t2", tie=True)
    assert Feedback(event_id="f", user_id="u", turn_id="t", timestamp=1, signal=pw).rating == 0.5
