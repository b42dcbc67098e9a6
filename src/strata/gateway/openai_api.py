"""OpenAI-compatible endpoints: chat completions, completions, embeddings, models."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from strata.config.settings import RouteConfig
from strata.engines.base import Kind
from strata.errors import InternalError, NotFound, StrataError
from strata.gateway.attempt import call_engine, end, timed
from strata.gateway.cache import Entry, ExactCache, replay, shared_get
from strata.gateway.context import CallRecord, estimate_prompt_tokens
from strata.gateway.continuation import Continuation
from strata.gateway.http import SSE_DONE, Gone, error_response, json_response, request_id_of, sse_event
from strata.gateway.pipeline import account, admit
from strata.gateway.relay import Relay, RelayResponse, _done, _engine_time
from strata.gateway.schemas import ChatRequest, CompletionRequest, EmbeddingRequest, openai_shaped
from strata.gateway.semantic import SemanticCache, split, unit
from strata.gateway.shadow import answer_text, shadow_body
from strata.gateway.state import AppState
from strata.routing.router import Attempts, Deployment, Target

log = logging.getLogger(__name__)


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.strata
    return state


async def chat_completions(request: Request) -> Response:
    return await _generation(request, "chat", ChatRequest)


async def completions(request: Request) -> Response:
    return await _generation(request, "completion", CompletionRequest)


async def _generation(request: Request, kind: Kind, schema: type) -> Response:
    state = _state(request)
    call = CallRecord(request_id_of(request, state.new_id), kind)
    target: Target | None = None
    streaming = False
    shadow: tuple[Deployment, dict[str, Any]] | None = None
    try:
        body, req, attempts = await admit(state, request, call, schema)
        if attempts.route.cache.exact and (hit := await _cache_lookup(state, request, call, attempts.route, body)):
            return _from_cache(state, call, kind, req, hit)
        if (mirror_to := state.router.shadow_for(attempts.route)) is not None:
            shadow = mirror_to, shadow_body(body)
            call.answer = []
        if req.stream:
            want_usage = bool(req.stream_options and req.stream_options.include_usage)
            call.prompt_estimate = estimate_prompt_tokens(body)
            body["stream_options"] = {"include_usage": True}
            target, (chunks, first, started) = await call_engine(
                state, call, req, body, attempts, lambda t: _first_chunk(t, kind, body))
            streaming = True  # from here on, the relay releases what the request holds
            relay = Relay(state, call, target, chunks, first, want_usage, started, shadow,
                          Continuation.of(kind, req, body, attempts))
            return RelayResponse(relay, {"x-request-id": call.request_id, "cache-control": "no-cache",
                                         **(call.headers or {})})
        target, response = await _answer(state, call, req, body, attempts, lambda t: t.engine.generate(kind, body))
        return response
    except asyncio.CancelledError:
        return _cancelled(call)
    except Exception as exc:
        return failed(call, exc)
    finally:
        if not streaming:
            if call.watch is not None:
                call.watch.stop()
            _done(state, call, target, shadow)


def _cancelled(call: CallRecord) -> Response:
    """The client left (the request's ``Disconnect`` cancelled it): nothing to answer. Any other
    cancellation (the server stopping, an in-process caller giving up) goes on."""
    call.status, call.error_type = 499, "client_disconnected"
    if call.watch is None or not call.watch.stop():
        raise  # noqa: PLE0704 (the CancelledError being handled by the caller)
    return Gone()


def failed(call: CallRecord, exc: Exception) -> Response:
    """The answer to a request that raised: its own error for a ``StrataError``, else an internal error."""
    if isinstance(exc, StrataError):
        call.fail(exc)
        return error_response(exc, call.request_id)
    return _internal_error(call, exc)


def _internal_error(call: CallRecord, exc: Exception) -> Response:
    """Any exception that is not a ``StrataError``: logged with its traceback, an OpenAI-shaped 500 for the
    client, and the same status in the ledger row."""
    log.error("request %s: unhandled error", call.request_id, exc_info=exc)
    err = InternalError("Internal error in the gateway.")
    call.fail(err)
    return error_response(err, call.request_id)


async def _cache_lookup(state: AppState, request: Request, call: CallRecord, route: RouteConfig,
                        body: dict[str, Any]) -> Entry | None:
    """The cached answer to this request (exact, then semantic), or None (then the answer will be stored)."""
    if (request.headers.get("x-strata-cache") == "bypass" or not ExactCache.cacheable(route.cache, body)
            or (body.get("n") or 1) > 1 or body.get("tools")):  # it stores and replays one text choice
        state.metrics.cache.labels(route.name, "bypass").inc()
        return None
    assert call.principal is not None
    call.cache_key = ExactCache.key(route.cache, route.name, call.endpoint, call.principal, body)
    entry = state.cache.get(call.cache_key)
    if entry is None and state.shared.remote is not None:
        entry = await shared_get(state, route.cache, call.cache_key)
    result = "hit" if entry else "miss"
    if entry is None and route.cache.semantic:
        entry = await _semantic_lookup(state, call, route, body)
        result = "semantic_hit" if entry else "miss"
    state.metrics.cache.labels(route.name, result).inc()
    if entry is None:
        call.headers = {**(call.headers or {}), "x-strata-cache": "miss"}
        if call.answer is None:
            call.answer = []  # collect a streamed answer to store it whole
    return entry


async def _semantic_lookup(state: AppState, call: CallRecord, route: RouteConfig,
                           body: dict[str, Any]) -> Entry | None:
    parts = split(body)
    embed = state.embedder(route.cache.embeddings_route)
    if parts is None or embed is None or call.principal is None:
        return None
    context, text = parts
    cfg = route.cache
    space = call.principal.team if cfg.namespace == "team" else call.principal.key_id if cfg.namespace == "key" else ""
    key = SemanticCache.context_key(route.name, cfg.namespace, space, call.endpoint, context)
    try:
        vector = unit((await embed([text], call))[0])
    except Exception as exc:  # no embeddings right now: exact caching only
        log.warning("semantic cache of %s: embeddings unavailable: %s", route.name, exc)
        return None
    match = state.semantic.lookup(key, vector, text, cfg.similarity)
    if match is None:
        call.semantic = (key, vector, text)
        return None
    call.headers = {**(call.headers or {}), "x-strata-cache-similarity": f"{match.similarity:.4f}"}
    return match.entry


def _from_cache(state: AppState, call: CallRecord, kind: Kind, req: Any, entry: Entry) -> Response:
    call.role, call.saved, call.cache_key = "cache", entry.cost, None
    call.take_usage(entry.response.get("usage"))
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    response = {**entry.response, "id": f"{prefix}-{call.request_id}", "model": call.route}
    headers = {"x-strata-cache": "hit", **(call.headers or {})}
    if not req.stream:
        return json_response(response, call.request_id, headers=headers)
    want_usage = bool(req.stream_options and req.stream_options.include_usage)
    events = [sse_event(c) for c in replay(kind, response, want_usage)] + [SSE_DONE]
    call.first_token = call.last_token = time.perf_counter()

    async def body() -> AsyncIterator[bytes]:
        for e in events:
            yield e

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"x-request-id": call.request_id, "cache-control": "no-cache", **headers})


async def _answer(state: AppState, call: CallRecord, req: Any, body: dict[str, Any], attempts: Attempts,
                  make: Callable[[Target], Awaitable[dict[str, Any]]]) -> tuple[Target, Response]:
    """A JSON (non-streaming) answer: call the engine with retries and fallbacks, account usage, respond."""
    target, (result, started) = await call_engine(state, call, req, body, attempts, lambda t: timed(make(t)))
    end(state, call, target, started)
    if (engine_ms := openai_shaped(result, call.endpoint)) is not None:
        _engine_time(call, engine_ms)
        call.headers = {**(call.headers or {}), "x-strata-engine-ms": str(engine_ms)}
    call.take_usage(result.get("usage"))
    if call.answer is not None:
        call.answer.append(answer_text(result))
    result["model"] = call.route
    if call.cache_key is not None:
        call.cached = result
    return target, json_response(result, call.request_id, headers=call.headers)


async def _first_chunk(target: Target, kind: Kind, body: dict[str, Any]) -> tuple[Any, Any, float]:
    """Open the stream and wait for its first chunk, so an engine that fails early can be retried."""
    started = time.perf_counter()
    chunks = aiter(target.engine.stream(kind, body))
    return chunks, await anext(chunks, None), started


async def embeddings(request: Request) -> Response:
    state = _state(request)
    call = CallRecord(request_id_of(request, state.new_id), "embeddings")
    target: Target | None = None
    try:
        body, req, attempts = await admit(state, request, call, EmbeddingRequest)
        target, response = await _answer(state, call, req, body, attempts, lambda t: t.engine.embed(body))
        return response
    except asyncio.CancelledError:
        return _cancelled(call)
    except Exception as exc:
        return failed(call, exc)
    finally:
        if call.watch is not None:
            call.watch.stop()
        account(state, call, target)


async def list_models(request: Request) -> Response:
    state = _state(request)
    rid = request_id_of(request, state.new_id)
    try:
        principal = await state.auth.authenticate(request.headers.get("authorization"))
    except StrataError as exc:
        return error_response(exc, rid)
    created = int(state.started_at)
    data = [{"id": r.name, "object": "model", "created": created, "owned_by": "strata"}
            for r in state.router.visible_to(principal)]
    return json_response({"object": "list", "data": data}, rid)


async def retrieve_model(request: Request) -> Response:
    """``GET /v1/models/{id}``: one route the key may use; 404 for unknown and forbidden alike."""
    state = _state(request)
    rid = request_id_of(request, state.new_id)
    model = request.path_params["model"]
    try:
        principal = await state.auth.authenticate(request.headers.get("authorization"))
        if model not in state.router.routes or not principal.may_use(model):
            raise NotFound(f"The model '{model}' does not exist or you do not have access to it.", param="model")
    except StrataError as exc:
        return error_response(exc, rid)
    return json_response({"id": model, "object": "model", "created": int(state.started_at), "owned_by": "strata"},
                         rid)


FAST_PATHS = {"/chat/completions": chat_completions, "/completions": completions, "/embeddings": embeddings}

routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
]
