"""A small OpenAI-compatible upstream for the gateway's tests and benchmark: real HTTP (aiohttp), streaming.

Each answer names the upstream model and echoes the last user message, so a test knows which upstream
answered. ``fail`` (upstream model names answering HTTP 500 before any byte) and ``break_mid`` (names whose
stream breaks after the first chunk) are changed at run time. Every request body and its authorization header
are kept in ``seen``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

from aiohttp import web

from prefstream.procs import free_port


def answer_for(model: str, body: dict) -> str:
    last = next((m.get("content") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
    return f"[{model}] you said: {last}"


class UpstreamServer:
    def __init__(self, chunk_delay_s: float = 0.0):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.fail: set[str] = set()
        self.break_mid: set[str] = set()
        self.seen: list[tuple[dict, str | None]] = []
        self.chunk_delay_s = chunk_delay_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="upstream", daemon=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append((body, request.headers.get("authorization")))
        model = body["model"]
        if model in self.fail:
            return web.json_response({"error": {"message": "upstream down", "type": "server_error"}}, status=500)
        text = answer_for(model, body)
        if not body.get("stream"):
            return web.json_response({"id": "cmpl-1", "object": "chat.completion", "created": int(time.time()),
                                      "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                                                                   "message": {"role": "assistant", "content": text}}],
                                      "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        words = text.split(" ")
        for i, w in enumerate(words):
            delta = {"content": (" " if i else "") + w}
            chunk = {"id": "cmpl-1", "object": "chat.completion.chunk", "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if model in self.break_mid:
                request.transport.close()  # the connection drops mid-stream
                return resp
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.completions)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def start(self) -> "UpstreamServer":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
