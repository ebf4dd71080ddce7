"""Forwarding a chat request to an LLM's OpenAI-compatible upstream (aiohttp client), and reading its answer.

``open`` returns once the upstream has answered with a success status: any failure before that (connection,
an error status, no first byte within the timeout, a missing API key) is an ``UpstreamError`` naming its stage,
and the gateway may try the next-best candidate. What happens after is the caller's: a JSON body, or an SSE
stream passed through chunk by chunk while ``StreamText`` collects the answer's text.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import aiohttp

from prefstream.config import Settings
from prefstream.events import LLMRegistered


class UpstreamError(Exception):
    """An upstream failed before its first byte: ``stage`` is config | connect | timeout | status."""

    def __init__(self, llm_id: str, stage: str, detail: str):
        super().__init__(f"{llm_id}: {stage}: {detail}")
        self.llm_id, self.stage, self.detail = llm_id, stage, detail


class Upstreams:
    def __init__(self, s: Settings):
        self.s = s
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.s.gateway_connect_timeout_s,
                                        sock_read=self.s.gateway_read_timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=True)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _headers(self, llm: LLMRegistered) -> dict[str, str]:
        up = llm.upstream
        headers = {"content-type": "application/json"}
        if up is not None and up.api_key_env:
            key = os.environ.get(up.api_key_env)
            if not key:
                raise UpstreamError(llm.llm_id, "config", f"environment variable {up.api_key_env} is not set")
            headers["authorization"] = f"Bearer {key}"
        return headers

    async def open(self, llm: LLMRegistered, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """POST the body to the upstream; the response once its status says success."""
        if llm.upstream is None:
            raise UpstreamError(llm.llm_id, "config", "registered without an upstream")
        assert self._session is not None, "start() first"
        url = f"{llm.upstream.base_url}/chat/completions"
        try:
            resp = await asyncio.wait_for(self._session.post(url, json=body, headers=self._headers(llm)),
                                          timeout=self.s.gateway_first_byte_timeout_s)
        except asyncio.TimeoutError:
            raise UpstreamError(llm.llm_id, "timeout",
                                f"no answer within {self.s.gateway_first_byte_timeout_s} s") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(llm.llm_id, "connect", f"{type(exc).__name__}: {exc}") from None
        if resp.status >= 400:
            try:
                detail = (await resp.text())[:300]
            except aiohttp.ClientError:
                detail = ""
            resp.release()
            raise UpstreamError(llm.llm_id, "status", f"HTTP {resp.status} {detail}".strip())
        return resp


def answer_text(body: dict[str, Any]) -> str:
    """The assistant text of a non-streamed completion ('' if it has none, e.g. only tool calls)."""
    try:
        content = body["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
    return content if isinstance(content, str) else ""


class StreamText:
    """Collects the assistant text of an SSE chat-completion stream from the raw bytes passed through."""

    def __init__(self) -> None:
        self._buf = b""
        self.parts: list[str] = []
        self.done = False  # saw `data: [DONE]`
        self.error: str | None = None  # an error event the upstream sent

    def feed(self, chunk: bytes) -> None:
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                self.done = True
                continue
            try:
                event = json.loads(data)
            except ValueError:
                continue
            self._take(event)

    def _take(self, event: Any) -> None:
        if not isinstance(event, dict):
            return
        if event.get("error"):
            self.error = str(event["error"])[:300]
        for choice in event.get("choices") or []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                content = (choice.get("delta") or {}).get("content")
                if isinstance(content, str):
                    self.parts.append(content)

    @property
    def text(self) -> str:
        return "".join(self.parts)
