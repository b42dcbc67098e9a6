"""What the OpenAI resource endpoints (files, vector stores) share: authenticate the key, answer JSON or an
OpenAI error, read list pagination (``limit``, ``after``, ``order``) from the query string."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from strata.errors import InvalidRequest, StrataError
from strata.gateway.http import error_response, json_response, request_id_of
from strata.gateway.state import AppState
from strata.governance.keys import Principal

Handler = Callable[[Request, AppState, Principal], Awaitable[Any]]


def endpoint(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A handler that gets the caller's key and returns an OpenAI object (or a ready ``Response``)."""

    async def handle(request: Request) -> Response:
        state: AppState = request.app.state.strata
        rid = request_id_of(request, state.new_id)
        try:
            principal = await state.governance.auth.authenticate_request(request)
            out = await fn(request, state, principal)
        except StrataError as exc:
            return error_response(exc, rid)
        return out if isinstance(out, Response) else json_response(out, rid)

    handle.__name__ = fn.__name__
    handle.__doc__ = fn.__doc__
    return handle


def page(request: Request, *, default_limit: int = 20, max_limit: int = 100) -> tuple[int, str | None, str]:
    """``limit``, ``after`` and ``order`` of a list request (OpenAI's cursor pagination)."""
    q = request.query_params
    raw = q.get("limit")
    try:
        limit = int(raw) if raw is not None else default_limit
    except ValueError:
        raise InvalidRequest(f"limit must be an integer; not {raw!r}", param="limit") from None
    if not 1 <= limit <= max_limit:
        raise InvalidRequest(f"limit must be between 1 and {max_limit}", param="limit")
    order = q.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be asc or desc", param="order")
    return limit, q.get("after") or None, order


def listing(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


async def blocking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Database and storage work off the event loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)
