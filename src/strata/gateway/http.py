"""HTTP helpers shared by the gateway's endpoints: request ids, body reading, JSON/SSE/error responses."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from strata.errors import InvalidRequest, PayloadTooLarge, StrataError

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TAG = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_TAGS = 16


def request_id_of(request: Request, generate: Any) -> str:
    given = request.headers.get("x-request-id")
    if given and REQUEST_ID.match(given):
        return given
    return str(generate())


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is {declared} bytes; the limit is {limit} bytes.")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
    if not body:
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return parsed


def parse_tags(header: str | None) -> dict[str, str]:
    """``X-Strata-Tags: feature=search,tier=pro`` -> ``{"feature": "search", "tier": "pro"}``."""
    if not header:
        return {}
    tags: dict[str, str] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not _TAG.match(key) or not _TAG.match(value):
            raise InvalidRequest(
                f"Invalid tag {item.strip()!r}: use key=value pairs of letters, digits, '_', '.', '-' "
                "separated by commas", param="X-Strata-Tags")
        tags[key] = value
    if len(tags) > MAX_TAGS:
        raise InvalidRequest(f"At most {MAX_TAGS} tags per request", param="X-Strata-Tags")
    return tags


def json_response(obj: Any, request_id: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), status, {"x-request-id": request_id, **headers} if headers else
                    {"x-request-id": request_id}, "application/json")


def error_response(exc: StrataError, request_id: str | None = None) -> Response:
    headers = {"x-request-id": request_id} if request_id else {}
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(1, round(exc.retry_after)))
    return Response(exc.to_json(), exc.status, headers, "application/json")


class Disconnect:
    """Cancels the task serving a request when its client disconnects (``http.disconnect``).

    Like vLLM's ``with_cancellation``, but the handler keeps running in its own task: one listener task per
    request, started once the body is read (it then owns ``receive``). The ``CancelledError`` lands where the
    handler waits (an engine call, the first chunk, a send), so every ``finally`` on the way runs; ``stop``
    ends the watch and, when the client had left, takes the cancellation back so the handler can finish.
    """

    __slots__ = ("gone", "_task", "_listener")

    def __init__(self, receive: Receive) -> None:
        self.gone = False
        self._task = asyncio.current_task()
        self._listener: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(self._listen(receive))

    async def _listen(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        if self._task is not None:
            self._task.cancel()

    def stop(self) -> bool:
        """Stop watching (idempotent); True when the client has left."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            if self.gone and self._task is not None:
                self._task.uncancel()
        return self.gone


class Gone(Response):
    """The answer to a client that has left: nothing to send."""

    def __init__(self) -> None:
        super().__init__(status_code=499)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None


def sse_event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
