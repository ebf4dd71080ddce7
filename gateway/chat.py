"""The OpenAI chat-completions request as the gateway validates it, and what prefstream reads from it.

Only what prefstream needs is checked strictly (model, messages, stream, user and the extra fields
``candidates`` / ``budget``); every other OpenAI field (temperature, tools, ...) passes through to the upstream
untouched. The query routed and recorded is the text of the last user message; the turn index is the number
of user messages before it; a conversation without an ``x-prefstream-conversation`` header is named by a hash
of its user and first user message, so an app that resends the history keeps one conversation.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from prefstream.events import MAX_CANDIDATES, MAX_TEXT_CHARS, Id, Price

AUTO_MODELS = ("prefstream/auto", "auto")
_ID = TypeAdapter(Id)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """POST /v1/chat/completions; prefstream's own fields are ``candidates`` and ``budget``."""

    model_config = ConfigDict(extra="allow")
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: bool = False
    user: Id | None = None
    candidates: Annotated[list[Id], Field(min_length=1, max_length=MAX_CANDIDATES)] | None = None
    budget: Price | None = None

    @property
    def routed(self) -> bool:
        return self.model in AUTO_MODELS

    def upstream_body(self, upstream_model: str) -> dict[str, Any]:
        """The body sent upstream: the request as the app wrote it, with the upstream's model name and without
        prefstream's fields."""
        body = self.model_dump(exclude={"candidates", "budget"}, exclude_none=True)
        body["model"] = upstream_model
        if self.stream:
            body["stream"] = True
        return body


def text_of(content: str | list[dict[str, Any]] | None) -> str:
    """A message's text: a string, or the text parts of a content list joined by newlines."""
    if isinstance(content, str):
        return content
    if not content:
        return ""
    return "\n".join(str(p.get("text", "")) for p in content if p.get("type") == "text" and p.get("text"))


def query_of(req: ChatRequest) -> str:
    """The last user message's text, cut to the longest text an event carries ('' if there is none)."""
    for m in reversed(req.messages):
        if m.role == "user":
            return text_of(m.content).strip()[:MAX_TEXT_CHARS]
    return ""


def turn_index_of(req: ChatRequest) -> int:
    """How many user messages precede the last one (0 for the first turn of a conversation)."""
    return max(sum(1 for m in req.messages if m.role == "user") - 1, 0)


def conversation_of(user_id: str, req: ChatRequest, header: str | None) -> str:
    """The conversation id: the header if given (checked like any id), else a hash of user + first user message."""
    if header:
        return _ID.validate_python(header)
    first = next((text_of(m.content) for m in req.messages if m.role == "user"), "")
    digest = hashlib.sha256(f"{user_id}\x00{first}".encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"conv-{digest}"


def user_of(body_user: str | None, header: str | None, allow_anonymous: bool) -> str | None:
    """The user: the body's (OpenAI ``user`` field, already checked), else the ``x-prefstream-user`` header, else
    ``anonymous`` when allowed; None when the request names nobody and anonymous users are not allowed."""
    if body_user:
        return body_user
    if header:
        return _ID.validate_python(header)
    return "anonymous" if allow_anonymous else None


class FeedbackRequest(BaseModel):
    """POST /v1/feedback: exactly one of ``thumbs_up``, ``score`` or ``preferred_over`` (this turn's answer beat
    the named turn's; ``tie`` for a draw)."""

    model_config = ConfigDict(extra="forbid")
    turn_id: Id
    user: Id | None = None
    thumbs_up: bool | None = None
    score: Annotated[float, Field(allow_inf_nan=False)] | None = None
    scale: tuple[float, float] = (1.0, 10.0)
    preferred_over: Id | None = None
    tie: bool = False

    def kind(self) -> Literal["thumbs", "score", "pairwise"]:
        given = [k for k, v in (("thumbs", self.thumbs_up), ("score", self.score),
                                ("pairwise", self.preferred_over)) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of thumbs_up, score or preferred_over")
        return given[0]  # type: ignore[return-value]
