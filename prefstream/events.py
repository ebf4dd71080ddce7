"""Wire schemas: every message on every prefstream topic is one of these, as UTF-8 JSON.

Validation is strict (no type coercion, no unknown fields) so a bad producer is caught at the edge
with a message that says which field is wrong and why; the event then goes to the dead-letter topic.
"""

from __future__ import annotations

import base64
import re
import json
import time
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    computed_field,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 1
MAX_TEXT_CHARS = 32_000  # one query or response
MAX_DESCRIPTION_CHARS = 4_000
MAX_EVENT_BYTES = 256 * 1024  # whole message on the wire
MAX_CANDIDATES = 64

#: Ids are opaque but tame: they end up in logs, keys and Cypher parameters.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}")


def _check_id(v: str) -> str:
    if not _ID_RE.fullmatch(v):
        shown = v if len(v) <= 40 else v[:40] + "..."
        raise ValueError(
            f"{shown!r} is not a valid id: use 1-128 letters, digits or . _ : @ / -, starting with a letter or digit"
        )
    return v


Id = Annotated[str, AfterValidator(_check_id)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]
EpochMs = Annotated[int, Field(ge=0, le=32_503_680_000_000)]  # up to year 3000
Price = Annotated[float, Field(ge=0.0, le=100_000.0, allow_inf_nan=False)]


def now_ms() -> int:
    return int(time.time() * 1000)


class Event(BaseModel):
    """Base of all wire events: strict, immutable, versioned."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")


class ChatTurn(Event):
    """One LLM answer to one user query in a conversation (several LLMs may answer the same turn)."""

    type: Literal["chat_turn"] = "chat_turn"
    event_id: Id
    user_id: Id
    conversation_id: Id
    turn_index: Annotated[int, Field(ge=0, le=10_000)]
    timestamp: EpochMs
    query: Text
    llm_id: Id
    response: Text


class Thumbs(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    kind: Literal["thumbs"] = "thumbs"
    up: bool


class Score(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    kind: Literal["score"] = "score"
    score: Annotated[float, Field(allow_inf_nan=False)]
    scale_min: Annotated[float, Field(allow_inf_nan=False)] = 1.0
    scale_max: Annotated[float, Field(allow_inf_nan=False)] = 10.0

    @model_validator(mode="after")
    def _in_scale(self) -> "Score":
        if not self.scale_min < self.scale_max:
            raise ValueError(f"scale_min ({self.scale_min}) must be below scale_max ({self.scale_max})")
        if not self.scale_min <= self.score <= self.scale_max:
            raise ValueError(f"score {self.score} is outside its scale [{self.scale_min}, {self.scale_max}]")
        return self


class Pairwise(BaseModel):
    """The rated turn's answer (from ``preferred_llm_id``) beat ``rejected_turn_id``'s answer, or tied."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    kind: Literal["pairwise"] = "pairwise"
    preferred_llm_id: Id
    rejected_llm_id: Id
    rejected_turn_id: Id
    tie: bool = False

    @model_validator(mode="after")
    def _distinct(self) -> "Pairwise":
        if self.preferred_llm_id == self.rejected_llm_id:
            raise ValueError("preferred_llm_id and rejected_llm_id must differ")
        return self


Signal = Annotated[Union[Thumbs, Score, Pairwise], Field(discriminator="kind")]


class Feedback(Event):
    """A user's judgement of one turn; every kind becomes one rating in [0, 1]."""

    type: Literal["feedback"] = "feedback"
    event_id: Id
    user_id: Id
    turn_id: Id  # event_id of the ChatTurn it rates
    timestamp: EpochMs
    signal: Signal

    @model_validator(mode="after")
    def _pair_names_other_turn(self) -> "Feedback":
        if isinstance(self.signal, Pairwise) and self.signal.rejected_turn_id == self.turn_id:
            raise ValueError("pairwise feedback: rejected_turn_id must be a different turn than turn_id")
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rating(self) -> float:
        s = self.signal
        if isinstance(s, Thumbs):
            return 1.0 if s.up else 0.0
        if isinstance(s, Score):
            return (s.score - s.scale_min) / (s.scale_max - s.scale_min)
        return 0.5 if s.tie else 1.0

    def model_dump_json(self, **kw) -> str:  # the rating is derived: never trust one sent back in
        return super().model_dump_json(exclude={"rating"}, **kw)


_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"  # an environment variable's name


class Upstream(BaseModel):
    """Where the gateway sends an LLM's requests: an OpenAI-compatible server. The API key never travels:
    only the name of the environment variable the gateway reads it from."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    base_url: Annotated[str, StringConstraints(min_length=8, max_length=512)]  # e.g. https://api.example.com/v1
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]  # the upstream's own model name
    api_key_env: Annotated[str, StringConstraints(pattern=_ENV_NAME)] | None = None

    @field_validator("base_url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", v):
            raise ValueError(f"{v[:60]!r} is not an http(s) base URL such as https://api.example.com/v1")
        return v.rstrip("/")


class LLMRegistered(Event):
    """Adds or updates a candidate LLM in the catalog."""

    type: Literal["llm_registered"] = "llm_registered"
    llm_id: Id
    description: Annotated[str, StringConstraints(min_length=1, max_length=MAX_DESCRIPTION_CHARS)]
    price_in: Price  # USD per million input tokens
    price_out: Price  # USD per million output tokens
    upstream: Upstream | None = None  # how `prefstream gateway` reaches it (absent: route-only)
    timestamp: EpochMs = Field(default_factory=now_ms)


class RouteRequest(Event):
    """Ask which LLM should answer ``query`` for ``user_id``."""

    type: Literal["route_request"] = "route_request"
    request_id: Id
    user_id: Id
    conversation_id: Id | None = None
    query: Text
    candidates: Annotated[list[Id], Field(min_length=1, max_length=MAX_CANDIDATES)] | None = None
    budget: Price | None = None  # highest acceptable output price, USD per million tokens
    # answer within this many ms of ``timestamp`` (default: settings.route_deadline_ms); a router that cannot
    # any more replies at once from its prior, flagged ``shed``
    deadline_ms: Annotated[int, Field(ge=1, le=600_000)] | None = None
    timestamp: EpochMs = Field(default_factory=now_ms)

    @field_validator("candidates")
    @classmethod
    def _unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("candidates must not repeat an llm id")
        return v


class RouteDecision(Event):
    """The one reply to a RouteRequest: a decision, a fallback decision, or an error with its reason."""

    type: Literal["route_decision"] = "route_decision"
    request_id: str  # echoed even when the request was invalid, so not an Id
    user_id: str | None = None
    chosen_llm_id: str | None = None  # None only for an error reply
    scores: dict[str, float] = Field(default_factory=dict)
    model_version: str | None = None
    scorer: str | None = None  # what answered: "model <version>", "count" (per-user win counts) or "prior"
    # why: the personal term of each candidate (what the user's own feedback added to its score) and the
    # feedback that pushed the chosen LLM most, see trainer/explain.py
    explain: dict[str, Any] = Field(default_factory=dict)
    turn_ids: list[str] = Field(default_factory=list)  # the turns the scorer looked at
    latency_ms: float = 0.0
    fallback: bool = False
    shed: bool = False  # past its deadline when dequeued: answered from the prior without graph or model
    error: str | None = None
    timestamp: EpochMs = Field(default_factory=now_ms)


class DeadLetter(Event):
    """An event that could not be accepted, with the original bytes and the reason."""

    type: Literal["dead_letter"] = "dead_letter"
    topic: str
    partition: int | None = None
    offset: int | None = None
    raw_b64: str
    reason: str
    timestamp: EpochMs = Field(default_factory=now_ms)

    @classmethod
    def of(cls, topic: str, raw: bytes, reason: str, partition: int | None = None,
           offset: int | None = None) -> "DeadLetter":
        return cls(topic=topic, raw_b64=base64.b64encode(raw).decode("ascii"), reason=reason[:2000],
                   partition=partition, offset=offset)

    @property
    def raw(self) -> bytes:
        return base64.b64decode(self.raw_b64)


class InvalidEvent(ValueError):
    """The reason an incoming message was refused, in words a producer can act on."""


E = TypeVar("E", bound=Event)


def _describe(err: ValidationError, name: str) -> str:
    parts = []
    for e in err.errors(include_url=False)[:8]:
        loc = ".".join(str(p) for p in e["loc"]) or "(event)"
        parts.append(f"{loc}: {e['msg']}")
    return f"invalid {name}: " + "; ".join(parts)


def parse_event(raw: bytes | str, model: type[E], max_bytes: int = MAX_EVENT_BYTES) -> E:
    """Decode and validate one message, or raise InvalidEvent with the reason."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")
    if len(raw) > max_bytes:
        raise InvalidEvent(f"message is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"message is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidEvent(f"message is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InvalidEvent("message is not acceptable JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer longer than Python's digit limit
        raise InvalidEvent(f"message is not acceptable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidEvent(f"message must be a JSON object, got {type(data).__name__}")
    if model is Feedback:
        data.pop("rating", None)  # derived from the signal; a copy sent back in is not trusted
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidEvent(_describe(exc, model.__name__)) from None


#: Any input event, told apart by its ``type`` field (for `prefstream publish` and replays).
AnyInputEvent = Annotated[Union[ChatTurn, Feedback, LLMRegistered, RouteRequest], Field(discriminator="type")]
EVENT_TYPES: dict[str, type[Event]] = {
    "chat_turn": ChatTurn,
    "feedback": Feedback,
    "llm_registered": LLMRegistered,
    "route_request": RouteRequest,
    "route_decision": RouteDecision,
    "dead_letter": DeadLetter,
}


def parse_any(raw: bytes | str) -> Event:
    """Parse a message whose ``type`` field names its schema."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")
    try:
        kind = json.loads(raw).get("type")
    except (ValueError, RecursionError, AttributeError):
        kind = None
    model = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        if kind is None:  # let parse_event give the precise complaint (size, UTF-8, JSON, shape)
            parse_event(raw, ChatTurn)
        raise InvalidEvent(f"unknown event type {kind!r}; expected one of {sorted(EVENT_TYPES)}")
    return parse_event(raw, model)
