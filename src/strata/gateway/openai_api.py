"""OpenAI-compatible endpoints: chat completions, completions, embeddings, models.

Each inference endpoint is a ``Surface`` served by the pipeline (``pipeline.stages.STAGES``): what its body
becomes for the engine, and what the engine's answer becomes for the client."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from strata.engines.base import Kind
from strata.errors import NotFound, StrataError
from strata.gateway.cache import Entry, replay
from strata.gateway.http import SSE_DONE, error_response, json_response, request_id_of, sse_event
from strata.gateway.relay import Relay, RelayResponse
from strata.gateway.schemas import ChatRequest, CompletionRequest, EmbeddingRequest
from strata.gateway.state import AppState
from strata.pipeline.flow import Flow, Surface
from strata.pipeline.record import CallRecord
from strata.pipeline.stage import run
from strata.pipeline.stages import STAGES
from strata.pipeline.telemetry import begin_trace
from strata.routing.router import Target

log = logging.getLogger(__name__)


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.strata
    return state


class Generation:
    """Chat completions and text completions: the engine's answer is the API's answer."""

    cacheable = shadowed = continuable = True

    def __init__(self, kind: Kind, operation: str, schema: type) -> None:
        self.kind, self.operation, self.schema = kind, operation, schema

    async def prepare(self, flow: Flow, raw: dict[str, Any]) -> dict[str, Any]:
        return raw

    def engine_call(self, flow: Flow, target: Target) -> Awaitable[dict[str, Any]]:
        assert flow.body is not None
        return target.engine.generate(self.kind, flow.body)

    async def answer(self, flow: Flow, result: dict[str, Any]) -> Response:
        return json_response(result, flow.call.request_id, headers=flow.call.headers)

    def stream(self, flow: Flow, relay: Relay) -> Response:
        call = flow.call
        return RelayResponse(relay, {"x-request-id": call.request_id, "cache-control": "no-cache",
                                     **(call.headers or {})})

    async def cached(self, flow: Flow, entry: Entry) -> Response:
        call, req = flow.call, flow.req
        prefix = "chatcmpl" if self.kind == "chat" else "cmpl"
        response = {**entry.response, "id": f"{prefix}-{call.request_id}", "model": call.route}
        headers = {"x-strata-cache": "hit", **(call.headers or {})}
        if not req.stream:
            return json_response(response, call.request_id, headers=headers)
        want_usage = bool(req.stream_options and req.stream_options.include_usage)
        events = [sse_event(c) for c in replay(self.kind, response, want_usage)] + [SSE_DONE]
        call.first_token = call.last_token = time.perf_counter()

        async def body() -> AsyncIterator[bytes]:
            for e in events:
                yield e

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"x-request-id": call.request_id, "cache-control": "no-cache", **headers})


class Embeddings(Generation):
    """Embeddings: JSON only, never cached, mirrored or continued."""

    cacheable = shadowed = continuable = False

    def engine_call(self, flow: Flow, target: Target) -> Awaitable[dict[str, Any]]:
        assert flow.body is not None
        return target.engine.embed(flow.body)


CHAT = Generation("chat", "chat", ChatRequest)
COMPLETION = Generation("completion", "text_completion", CompletionRequest)
EMBEDDINGS = Embeddings("embeddings", "embeddings", EmbeddingRequest)  # type: ignore[arg-type]  # not a generation kind


def serve(request: Request, surface: Surface) -> Awaitable[Response]:
    """One request of ``surface`` through the pipeline's stages."""
    state = _state(request)
    call = CallRecord(request_id_of(request, state.new_id), surface.kind)
    call.trace = begin_trace(state, request, call.request_id)
    return run(STAGES, Flow(state, request, call, surface))


async def chat_completions(request: Request) -> Response:
    return await serve(request, CHAT)


async def completions(request: Request) -> Response:
    return await serve(request, COMPLETION)


async def embeddings(request: Request) -> Response:
    return await serve(request, EMBEDDINGS)


async def list_models(request: Request) -> Response:
    state = _state(request)
    rid = request_id_of(request, state.new_id)
    try:
        principal = await state.governance.auth.authenticate_request(request)
    except StrataError as exc:
        return error_response(exc, rid)
    created = int(state.started_at)
    data = [{"id": r.name, "object": "model", "created": created, "owned_by": "strata"}
            for r in state.routing.router.visible_to(principal)]
    return json_response({"object": "list", "data": data}, rid)


async def retrieve_model(request: Request) -> Response:
    """``GET /v1/models/{id}``: one route the key may use; 404 for unknown and forbidden alike."""
    state = _state(request)
    rid = request_id_of(request, state.new_id)
    model = request.path_params["model"]
    try:
        principal = await state.governance.auth.authenticate_request(request)
        if model not in state.routing.router.routes or not principal.may_use(model):
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
