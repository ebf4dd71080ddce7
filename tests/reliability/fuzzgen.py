"""Seeded generators of bad (and good) wire events, shared by the fuzz tests and bench/reliability.py."""

from __future__ import annotations

import json
import random

GOOD_LLMS = ("m1", "m2")

CYPHER_IDS = [
    "u1' OR 1=1 //", "x}) DETACH DELETE n //", "a\") MATCH (n) DETACH DELETE n RETURN 1 //", "'; DROP GRAPH g; --",
    "$rows", "u1 OR true", "n) SET n.admin = true //", "`label`", "{user_id: 'x'}", "\\u0027",
]


def good_turn(i: int, tag: str) -> dict:
    return {"type": "chat_turn", "event_id": f"{tag}t{i}", "user_id": f"u{i % 7}", "conversation_id": f"c{i % 11}",
            "turn_index": i % 50, "timestamp": 1_000 + i,
            "query": f"question {i % 23}: MATCH (n) DETACH DELETE n; ' \" }} // ✓",
            "llm_id": GOOD_LLMS[i % 2], "response": f"answer {i} ✓"}


def good_feedback(i: int, tag: str) -> dict:
    kinds = [{"kind": "thumbs", "up": bool(i % 2)}, {"kind": "score", "score": float(1 + i % 10)},
             {"kind": "score", "score": 0.5, "scale_min": 0.0, "scale_max": 1.0}]
    return {"type": "feedback", "event_id": f"{tag}f{i}", "user_id": f"u{i % 7}", "turn_id": f"{tag}t{i}",
            "timestamp": 2_000 + i, "signal": kinds[i % 3]}


def _enc(d) -> bytes:
    return json.dumps(d).encode("utf-8")


def _turn_base(rng: random.Random, j: int, tag: str) -> dict:
    d = good_turn(rng.randrange(10_000), tag)
    d["event_id"] = f"{tag}bad{j}"
    return d


def _fb_base(rng: random.Random, j: int, tag: str) -> dict:
    d = good_feedback(rng.randrange(10_000), tag)
    d["event_id"] = f"{tag}badf{j}"
    return d


# Each class: (name, topic kind "turns" | "feedback", maker(rng, j, tag) -> bytes).  Every maker's output
# must be refused by validation (or, for unknown LLMs, by the ingestor).
def _truncated(rng, j, tag):
    raw = _enc(_turn_base(rng, j, tag) if rng.random() < 0.5 else _fb_base(rng, j, tag))
    return raw[: rng.randrange(0, len(raw) - 1)]


def _wrong_type(rng, j, tag):
    d = _turn_base(rng, j, tag)
    field, value = rng.choice([("turn_index", "zero"), ("turn_index", 1.5), ("timestamp", "now"),
                               ("timestamp", 1.0e3), ("query", 42), ("response", None), ("user_id", ["u1"]),
                               ("llm_id", {"id": "m1"}), ("turn_index", True), ("schema_version", "1"),
                               ("turn_index", -1), ("timestamp", -5), ("schema_version", 2)])
    d[field] = value
    return _enc(d)


def _long_text(rng, j, tag):
    d = _turn_base(rng, j, tag)
    d[rng.choice(["query", "response"])] = "y" * rng.randrange(32_001, 40_000)
    return _enc(d)


def _huge_message(rng, j, tag):
    d = _turn_base(rng, j, tag)
    d["query"] = "z" * rng.randrange(262_145, 300_000)
    return _enc(d)


def _bad_utf8(rng, j, tag):
    raw = _enc(_turn_base(rng, j, tag))
    bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf0\x28\x8c\x28", b"\x80", b"\xfe\xfe"])
    at = rng.randrange(1, len(raw) - 1)
    return raw[:at] + bad + raw[at:]


def _cypher_id(rng, j, tag):
    d = _turn_base(rng, j, tag)
    field = rng.choice(["user_id", "conversation_id", "event_id", "llm_id"])
    d[field] = rng.choice(CYPHER_IDS) + str(j)
    return _enc(d)


def _unknown_llm(rng, j, tag):
    d = _turn_base(rng, j, tag)
    d["llm_id"] = f"ghost-{j}"
    return _enc(d)


def _rating_out_of_range(rng, j, tag):
    d = _fb_base(rng, j, tag)
    d["signal"] = rng.choice([{"kind": "score", "score": 11.0}, {"kind": "score", "score": 0.0},
                              {"kind": "score", "score": -3.5, "scale_min": 0.0, "scale_max": 1.0},
                              {"kind": "score", "score": 5.0, "scale_min": 10.0, "scale_max": 1.0},
                              {"kind": "score", "score": 1e308 * 10}, {"kind": "score", "score": float("nan")}])
    return _enc(d)


def _unknown_kind(rng, j, tag):
    if rng.random() < 0.5:
        d = _fb_base(rng, j, tag)
        d["signal"] = {"kind": rng.choice(["stars", "emoji", "", "THUMBS"]), "up": True}
    else:
        d = _turn_base(rng, j, tag)
        d["type"] = rng.choice(["chat_turnx", "feedback", "route_request", "", None])
    return _enc(d)


def _missing_field(rng, j, tag):
    d = _turn_base(rng, j, tag)
    d.pop(rng.choice(["event_id", "user_id", "conversation_id", "turn_index", "timestamp", "query", "llm_id",
                      "response"]))
    return _enc(d)


def _extra_or_shape(rng, j, tag):
    return rng.choice([_enc({**_turn_base(rng, j, tag), "admin": True}), b"[]", b"null", b"42", b'"chat_turn"',
                       b"", b"{}", _enc({**_turn_base(rng, j, tag), "rating": 1.0})])


BAD_CLASSES = {
    "truncated_json": ("turns", _truncated),
    "wrong_type": ("turns", _wrong_type),
    "long_text": ("turns", _long_text),
    "huge_message": ("turns", _huge_message),
    "invalid_utf8": ("turns", _bad_utf8),
    "cypher_id": ("turns", _cypher_id),
    "unknown_llm": ("turns", _unknown_llm),
    "rating_out_of_range": ("feedback", _rating_out_of_range),
    "unknown_kind": ("feedback", _unknown_kind),
    "missing_field": ("turns", _missing_field),
    "extra_field_or_shape": ("turns", _extra_or_shape),
}


def bad_events(n: int, seed: int = 0, tag: str = "", huge_max: int = 20, ) -> list[tuple[str, str, bytes]]:
    """``n`` bad events as (class, topic kind, raw bytes), every class represented, at most ``huge_max``
    messages over 256 KiB (they cost the broker memory and the test time)."""
    rng = random.Random(seed)
    names = list(BAD_CLASSES)
    out: list[tuple[str, str, bytes]] = []
    huge = 0
    for j in range(n):
        name = names[j % len(names)] if j < len(names) else rng.choice(names)
        if name == "huge_message":
            if huge >= huge_max:
                name = "wrong_type"
            huge += 1
        topic, maker = BAD_CLASSES[name]
        out.append((name, topic, maker(rng, j, tag)))
    return out
