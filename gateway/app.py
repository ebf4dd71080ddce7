"""The gateway's HTTP API (aiohttp): OpenAI-compatible chat completions routed per user, feedback, models,
health and Prometheus metrics.

    POST /v1/chat/completions   model "prefstream/auto" (or "auto") is routed; a catalog LLM id passes through
    POST /v1/feedback           {"turn_id", "thumbs_up" | "score" [+ "scale"] | "preferred_over" [+ "tie"]}
    GET  /v1/models             the catalog and prefstream/auto
    GET  /healthz  /readyz  /metrics

Errors use OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``. Response headers of a completion:
x-prefstream-llm, -model-version, -fallback, -route-ms, -request-id, -turn-id.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.catalog import UpstreamCatalog
from gateway.chat import AUTO_MODELS, ChatRequest, FeedbackRequest, conversation_of, query_of, turn_index_of, user_of
from gateway.feedback import NotYours, TurnBook, feedback_event
from gateway.routing import GatewayRouter, Route, RouteRefused
from gateway.upstream import StreamText, UpstreamError, Upstreams, answer_text
from prefstream.config import Settings
from prefstream.events import MAX_TEXT_CHARS, LLMRegistered
from prefstream.metrics import metrics
from streams.client import new_id

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param

    def response(self) -> web.Response:
        return web.json_response({"error": {"message": self.message, "type": self.kind, "param": self.param,
                                            "code": self.code}}, status=self.status)


@dataclass
class TurnContext:
    """What the gateway records once the answer is complete."""

    turn_id: str
    user_id: str
    conversation_id: str
    turn_index: int
    query: str


def _describe(exc: ValidationError) -> tuple[str, str | None]:
    errs = exc.errors(include_url=False)[:5]
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errs]
    param = ".".join(str(p) for p in errs[0]["loc"]) if errs and errs[0]["loc"] else None
    return "; ".join(parts), param


class Gateway:
    def __init__(self, s: Settings, catalog: UpstreamCatalog, client, owners=None):
        """``client``: a streams.client.PrefstreamClient; ``owners``: the graph's turn lookup (optional)."""
        self.s = s
        self.catalog = catalog
        self.client = client
        self.router = GatewayRouter(s, client)
        self.upstreams = Upstreams(s)
        self.turns = TurnBook()
        self.owners = owners
        self._publishing: set[asyncio.Future] = set()  # ChatTurns on their way to the broker
        self._keys = [k.strip() for k in s.gateway_keys.get_secret_value().split(",") if k.strip()] \
            if s.gateway_keys else []

    # --- the application -------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.s.gateway_max_body_bytes, middlewares=[self._errors, self._auth])
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/feedback", self.feedback)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.prometheus)
        app.on_startup.append(lambda _: self.upstreams.start())
        app.on_cleanup.append(lambda _: self.upstreams.close())
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler):
        endpoint = request.match_info.route.resource.canonical if request.match_info.route.resource else "other"
        t0 = time.perf_counter()
        try:
            resp = await handler(request)
        except ApiError as exc:
            resp = exc.response()
        except web.HTTPRequestEntityTooLarge:
            resp = ApiError(413, f"request body over {self.s.gateway_max_body_bytes} bytes").response()
        except web.HTTPException as exc:
            resp = ApiError(exc.status, exc.reason or "error").response()
        m = metrics()
        m.gateway_requests.labels(endpoint, str(resp.status)).inc()
        m.gateway_latency.labels(endpoint).observe(time.perf_counter() - t0)
        return resp

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if self._keys and request.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            token = given[7:].strip() if given.lower().startswith("bearer ") else ""
            if not any(hmac.compare_digest(token.encode(), k.encode()) for k in self._keys):
                raise ApiError(401, "missing or unknown API key (Authorization: Bearer KEY)", "authentication_error",
                               "invalid_api_key")
        return await handler(request)

    async def _body(self, request: web.Request, model: type[BaseModel]):
        raw = await request.read()
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise ApiError(400, "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object")
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            message, param = _describe(exc)
            raise ApiError(400, message, param=param) from None

    def _user(self, request: web.Request, body_user: str | None) -> str:
        try:
            user = user_of(body_user, request.headers.get("x-prefstream-user"), self.s.gateway_allow_anonymous)
        except ValidationError as exc:
            raise ApiError(400, "x-prefstream-user: " + _describe(exc)[0], param="x-prefstream-user") from None
        if user is None:
            raise ApiError(400, "name the user: the OpenAI `user` field or an x-prefstream-user header", param="user")
        return user

    # --- chat completions ------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        req: ChatRequest = await self._body(request, ChatRequest)
        if len(req.messages) > self.s.gateway_max_messages:
            raise ApiError(400, f"{len(req.messages)} messages; the limit is {self.s.gateway_max_messages}",
                           param="messages")
        user = self._user(request, req.user)
        query = query_of(req)
        if not query:
            raise ApiError(400, "no user message with text to route", param="messages")
        try:
            conversation = conversation_of(user, req, request.headers.get("x-prefstream-conversation"))
        except ValidationError as exc:
            raise ApiError(400, "x-prefstream-conversation: " + _describe(exc)[0]) from None
        route = await self._route(req, user, query, conversation)
        ctx = TurnContext(new_id("turn"), user, conversation, turn_index_of(req), query)
        t0 = time.perf_counter()
        upstream, llm, failed = await self._open(route, req)
        metrics().gateway_first_byte.observe(time.perf_counter() - t0 + route.route_ms / 1000)
        headers = self._headers(route, llm, failed, ctx)
        if req.stream:
            return await self._stream(request, upstream, llm, headers, ctx)
        try:
            body = await upstream.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            metrics().gateway_upstream_errors.labels(llm.llm_id, "body").inc()
            raise ApiError(502, f"{llm.llm_id}: the upstream's answer could not be read: {exc}", "upstream_error")
        finally:
            upstream.release()
        self._record(ctx, llm.llm_id, answer_text(body) if isinstance(body, dict) else "")
        return web.json_response(body, headers=headers)

    def _candidates(self, req: ChatRequest) -> list[str]:
        if req.candidates is None:
            found = self.catalog.routable()
            if not found:
                raise ApiError(503, "no LLM in the catalog has an upstream; register some with "
                                    "`prefstream llms register FILE.yaml`", "service_unavailable")
            return found
        for m in req.candidates:
            e = self.catalog.get(m)
            if e is None or e.upstream is None:
                raise ApiError(400, f"candidate {m!r} is not in the catalog with an upstream", param="candidates")
        return list(req.candidates)

    async def _route(self, req: ChatRequest, user: str, query: str, conversation: str) -> Route:
        if not req.routed:
            e = self.catalog.get(req.model)
            if e is None or e.upstream is None:
                raise ApiError(404, f"model {req.model!r} is not in the catalog with an upstream; use "
                                    f"{AUTO_MODELS[0]!r} or one of GET /v1/models", code="model_not_found",
                               param="model")
            return Route(new_id("req"), [req.model])
        try:
            return await self.router.route(user, query, conversation, self._candidates(req), req.budget)
        except RouteRefused as exc:
            raise ApiError(400, f"not routed: {exc}", param="candidates") from None

    async def _open(self, route: Route, req: ChatRequest):
        """Open the first upstream of ``route.order`` that answers; -> (response, LLM, LLMs that failed)."""
        failed: list[UpstreamError] = []
        for llm_id in route.order:
            llm: LLMRegistered | None = self.catalog.get(llm_id)
            if llm is None or llm.upstream is None:
                failed.append(UpstreamError(llm_id, "config", "no upstream in the catalog"))
                continue
            try:
                return await self.upstreams.open(llm, req.upstream_body(llm.upstream.model)), llm, failed
            except UpstreamError as exc:
                log.warning("upstream failed: %s", exc)
                metrics().gateway_upstream_errors.labels(llm_id, exc.stage).inc()
                failed.append(exc)
        raise ApiError(502, "every upstream tried failed: " + "; ".join(str(e) for e in failed), "upstream_error")

    def _headers(self, route: Route, llm: LLMRegistered, failed: list, ctx: TurnContext) -> dict[str, str]:
        flags = [f for f in (route.fallback, "upstream" if failed else "") if f]
        return {"x-prefstream-llm": llm.llm_id, "x-prefstream-model-version": route.model_version or "",
                "x-prefstream-fallback": ",".join(flags) or "false",
                "x-prefstream-route-ms": f"{route.route_ms:.1f}", "x-prefstream-request-id": route.request_id,
                "x-prefstream-turn-id": ctx.turn_id}

    async def _stream(self, request: web.Request, upstream: aiohttp.ClientResponse, llm: LLMRegistered,
                      headers: dict[str, str], ctx: TurnContext) -> web.StreamResponse:
        """Pass the upstream's SSE stream through chunk by chunk; record the turn once it completed."""
        resp = web.StreamResponse(status=200, headers={**headers, "content-type": "text/event-stream",
                                                       "cache-control": "no-cache"})
        await resp.prepare(request)
        text = StreamText()
        try:
            async for chunk in upstream.content.iter_any():
                text.feed(chunk)
                await resp.write(chunk)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # the upstream broke after the first byte
            metrics().gateway_upstream_errors.labels(llm.llm_id, "stream").inc()
            error = {"error": {"message": f"{llm.llm_id}: the upstream stream broke: {type(exc).__name__}: {exc}",
                               "type": "upstream_error", "param": None, "code": None}}
            await self._write_quietly(resp, f"data: {json.dumps(error)}\n\n".encode())
            return resp
        except ConnectionResetError:  # the client went away: nothing complete to record
            return resp
        finally:
            upstream.release()
        if text.error is None:
            self._record(ctx, llm.llm_id, text.text)
        await self._write_quietly(resp, None)
        return resp

    async def _write_quietly(self, resp: web.StreamResponse, data: bytes | None) -> None:
        try:
            await (resp.write(data) if data is not None else resp.write_eof())
        except ConnectionResetError:
            pass

    def _record(self, ctx: TurnContext, llm_id: str, answer: str) -> None:
        """Publish the finished ChatTurn (an empty answer, e.g. only tool calls, is not a turn to learn from)."""
        answer = answer.strip()[:MAX_TEXT_CHARS]
        if not answer:
            metrics().gateway_turns.labels("empty").inc()
            return
        self.turns.add(ctx.turn_id, ctx.user_id, llm_id)
        # off the response's path: the producer retries on its own, and closing the client flushes it
        fut = asyncio.get_running_loop().run_in_executor(None, lambda: self.client.publish_turn(
            user_id=ctx.user_id, conversation_id=ctx.conversation_id, turn_index=ctx.turn_index, query=ctx.query,
            llm_id=llm_id, response=answer, event_id=ctx.turn_id))
        self._publishing.add(fut)
        fut.add_done_callback(self._published)

    def _published(self, fut: asyncio.Future) -> None:
        self._publishing.discard(fut)
        if fut.cancelled() or fut.exception() is not None:
            metrics().gateway_turns.labels("failed").inc()
            log.error("a ChatTurn could not be published: %s", None if fut.cancelled() else fut.exception())
        else:
            metrics().gateway_turns.labels("published").inc()

    # --- feedback, models, health ----------------------------------------------------------------
    async def feedback(self, request: web.Request) -> web.Response:
        fb: FeedbackRequest = await self._body(request, FeedbackRequest)
        user = self._user(request, fb.user)
        turns = [fb.turn_id] + ([fb.preferred_over] if fb.preferred_over else [])
        loop = asyncio.get_running_loop()
        try:
            owners = await loop.run_in_executor(None, lambda: self.turns.owners(turns, self.owners))
        except Exception as exc:  # the graph store unreachable: the owner of an older turn cannot be checked
            log.warning("turn owner lookup failed: %s", exc)
            raise ApiError(503, "the turn's owner cannot be checked now (graph store unreachable); retry later",
                           "service_unavailable") from None
        try:
            event = feedback_event(fb, user, owners, new_id("fb"))
        except NotYours as exc:
            raise ApiError(404, str(exc), code="turn_not_found", param="turn_id") from None
        except ValueError as exc:
            raise ApiError(400, str(exc).splitlines()[-1] if isinstance(exc, ValidationError) else str(exc)) from None
        await loop.run_in_executor(None, lambda: self.client.publish(event))
        return web.json_response({"id": event.event_id, "turn_id": event.turn_id, "rating": event.rating},
                                 status=202)

    async def models(self, request: web.Request) -> web.Response:
        data = [{"id": AUTO_MODELS[0], "object": "model", "owned_by": "prefstream",
                 "description": "routed per user by prefstream"}]
        data += [{"id": e.llm_id, "object": "model", "owned_by": "prefstream", "description": e.description,
                  "price_in": e.price_in, "price_out": e.price_out, "routable": e.upstream is not None}
                 for e in self.catalog.all()]
        return web.json_response({"object": "list", "data": data})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(self, request: web.Request) -> web.Response:
        checks = {"catalog_loaded": self.catalog.loaded, "routable_llms": len(self.catalog.routable())}
        ok = checks["catalog_loaded"] and checks["routable_llms"] > 0
        return web.json_response({"ok": ok, **checks}, status=200 if ok else 503)

    async def prometheus(self, request: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        metrics()
        return web.Response(body=generate_latest(), headers={"content-type": CONTENT_TYPE_LATEST})
