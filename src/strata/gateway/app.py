"""The gateway's HTTP surface: the routes it serves, its error handlers, and ``Gateway`` (Starlette with the
inference endpoints dispatched straight from the ASGI call). The composition root (``strata.app``) builds the
state and the lifespan and hands them to ``gateway``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from strata.app.loops import LoopRunner
from strata.errors import InternalError, InvalidRequest, NotFound, StrataError
from strata.gateway import (
    admin,
    audit_admin,
    datasets_admin,
    drift_admin,
    evals_admin,
    feedback_api,
    files_api,
    health,
    lineage_admin,
    openai_api,
    openapi,
    policies_admin,
    quality_admin,
    registry_admin,
    responses,
    routes_admin,
    slo_admin,
    traces_admin,
    vector_stores_api,
)
from strata.gateway.http import REQUEST_ID, error_response, request_id_of
from strata.gateway.state import AppState

log = logging.getLogger(__name__)


def gateway(state: AppState, lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]],
            loops: LoopRunner) -> Gateway:
    app = Gateway(
        routes=[*openai_api.routes, *responses.routes, *feedback_api.routes, *files_api.routes,
                *vector_stores_api.routes, *lineage_admin.routes,
                *admin.routes, *routes_admin.routes,
                *policies_admin.routes, *traces_admin.routes, *audit_admin.routes, *quality_admin.routes,
                *slo_admin.routes,
                *datasets_admin.routes,
                *drift_admin.routes, *registry_admin.routes, *evals_admin.routes, *health.routes,
                *openapi.routes],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, StrataError: _strata_error,  # type: ignore[dict-item]
                            Exception: _internal_error},
    )
    app.state.strata = state
    app.state.traces = state.observe.tracer.store  # GET /admin/traces (None: tracing.store is off)
    app.state.loops = loops  # the control-loop runner (``strata.app.loops``)
    app.state.openapi = openapi.render(app.routes)  # once, from the routes served
    return app


class Gateway(Starlette):
    """Starlette, with the inference endpoints dispatched straight from the ASGI call.

    The hot path skips the generic middleware stack and router (measured: ~10% of gateway CPU per
    request); every other path goes through Starlette as usual.
    """

    FAST = {**{f"/v1{p}": e for p, e in openai_api.FAST_PATHS.items()}, "/v1/responses": responses.create_response}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.FAST.get(scope["path"])
            if endpoint is not None:
                scope["app"] = self
                try:
                    response = await endpoint(Request(scope, receive))
                except Exception:
                    log.exception("unhandled error on %s", scope["path"])
                    response = error_response(InternalError("Internal error in the gateway."),
                                              request_id_of(Request(scope), self.state.strata.new_id))
                await response(scope, receive, send)
                return
        if scope["type"] == "http":
            send = _with_request_id(scope, send, self.state.strata.new_id)
        await super().__call__(scope, receive, send)


def _with_request_id(scope: Scope, send: Send, new_id: Callable[[], str]) -> Send:
    """Every response carries X-Request-Id: the client's (if well-formed) or a fresh one."""
    given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None)
    rid = (given if given and REQUEST_ID.match(given) else new_id()).encode()

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
            message["headers"] = [*headers, (b"x-request-id", rid)]
        await send(message)

    return send_with_id


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        return error_response(NotFound(f"Unknown path {request.url.path}", code="unknown_url"))
    if exc.status_code == 405:
        err = InvalidRequest(f"Method {request.method} not allowed on {request.url.path}", code="method_not_allowed")
        err.status = 405
        return error_response(err)
    err = InvalidRequest(str(exc.detail))
    err.status = exc.status_code
    return error_response(err)


async def _strata_error(request: Request, exc: StrataError) -> Response:
    return error_response(exc, request.headers.get("x-request-id"))


async def _internal_error(request: Request, exc: Exception) -> Response:
    """Any other exception off the fast path: OpenAI's error shape (Starlette logs the traceback)."""
    return error_response(InternalError("Internal error in the gateway."))
