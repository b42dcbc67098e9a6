"""``POST /v1/responses`` and ``GET /v1/responses/{id}``: OpenAI's Responses API, served by chat engines.

A Responses request becomes a chat body (``to_chat``) in the ``parse`` stage and then goes the chat
completions' way: the same authentication, limits and budgets, routing, attempts (retries, fallbacks), ledger
row and metrics (its ledger endpoint is ``chat``). The answer is turned back into Responses output items
(``output``): the text as a ``message`` item, each chat ``tool_call`` as a ``function_call`` item; in a request,
``function_call`` items become an assistant message's ``tool_calls`` and ``function_call_output`` items
``role: tool`` messages. A stream is the chat relay's (``gateway.relay.Relay``, which releases every hold however
the stream ends), re-told as Responses events. With ``store`` (the default) the conversation is kept
(``response_store``) for ``previous_response_id`` and ``GET /v1/responses/{id}``.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from strata.errors import InvalidRequest, NotFound, StrataError
from strata.gateway.cache import Entry, replay
from strata.gateway.file_search import citations, file_search, search_item
from strata.gateway.http import error_response, json_response, request_id_of, sse_event
from strata.gateway.relay import Relay, RelayResponse
from strata.gateway.response_store import ResponseStore
from strata.gateway.schemas import ChatRequest, validate
from strata.gateway.state import AppState
from strata.pipeline.flow import Flow
from strata.pipeline.record import CallRecord
from strata.pipeline.retrieve import Retrieval
from strata.pipeline.stage import run
from strata.pipeline.stages import STAGES
from strata.pipeline.telemetry import begin_trace
from strata.routing.router import Target


class ResponsesRequest(BaseModel):
    """What Strata reads of a Responses request; other fields (``metadata``, ``text``, ...) are accepted."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    store: bool = True
    previous_response_id: str | None = Field(None, max_length=64)
    stream: bool = False
    user: str | None = Field(None, max_length=256)


# --- Responses request -> chat body ------------------------------------------------------------------------


def to_chat(req: ResponsesRequest, prior: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The chat body for ``req`` after the ``prior`` turns, and the chat messages of this turn's input."""
    turn = [{"role": "user", "content": req.input}] if isinstance(req.input, str) else _items(req.input)
    system = [{"role": "system", "content": req.instructions}] if req.instructions else []
    body: dict[str, Any] = {"model": req.model, "messages": [*system, *prior, *turn], "stream": req.stream}
    for ours, theirs in (("max_tokens", req.max_output_tokens), ("temperature", req.temperature),
                         ("top_p", req.top_p), ("user", req.user), ("parallel_tool_calls", req.parallel_tool_calls)):
        if theirs is not None:
            body[ours] = theirs
    functions = [_tool(t, i) for i, t in enumerate(req.tools or ()) if t.get("type") != "file_search"]
    if functions:
        body["tools"] = functions
    if req.tool_choice is not None:
        choice = req.tool_choice
        if isinstance(choice, dict):
            if choice.get("type") != "function" or not isinstance(choice.get("name"), str):
                raise InvalidRequest("tool_choice must be 'none', 'auto', 'required' or "
                                     "{'type': 'function', 'name': ...}.", param="tool_choice")
            choice = {"type": "function", "function": {"name": choice["name"]}}
        body["tool_choice"] = choice
    return body, turn


def _tool(tool: dict[str, Any], i: int) -> dict[str, Any]:
    if tool.get("type") != "function" or not isinstance(tool.get("name"), str):
        raise InvalidRequest(f"tools[{i}]: only function tools ({{'type': 'function', 'name': ...}}) are supported.",
                             param=f"tools[{i}]")
    function = {"name": tool["name"], "parameters": tool.get("parameters") or {"type": "object", "properties": {}}}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Input items as chat messages; consecutive ``function_call`` items are one assistant turn."""
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") in ("user", "assistant", "system", "developer"):
            out.append({"role": item["role"], "content": _content(item.get("content"), i)})
        elif kind == "function_call" and isinstance(item.get("call_id"), str) and isinstance(item.get("name"), str):
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": str(item.get("arguments") or "{}")}}
            if out and out[-1]["role"] == "assistant" and out[-1].get("tool_calls"):
                out[-1]["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output" and isinstance(item.get("call_id"), str):
            output = item.get("output")
            out.append({"role": "tool", "tool_call_id": item["call_id"],
                        "content": output if isinstance(output, str) else orjson.dumps(output).decode()})
        else:
            raise InvalidRequest(f"input[{i}]: unsupported item (Strata takes messages, function_call and "
                                 "function_call_output items).", param=f"input[{i}]")
    return out


def _content(content: Any, i: int) -> Any:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"input[{i}].content must be a string or a list of parts.", param=f"input[{i}].content")
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        else:
            raise InvalidRequest(f"input[{i}].content: unsupported part {kind!r}.", param=f"input[{i}].content")
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


# --- chat answer -> Responses output -----------------------------------------------------------------------


def _new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(16).hex()}"


@dataclass
class Turn:
    """One Responses request on its way through the chat path."""

    req: ResponsesRequest
    prior: list[dict[str, Any]] = field(default_factory=list)
    input: list[dict[str, Any]] = field(default_factory=list)
    system: dict[str, Any] | None = None  # the instructions' message in the chat body (a guard may redact it)
    retrieval: Retrieval | None = None  # a file_search tool (``gateway.file_search``)
    id: str = field(default_factory=lambda: _new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))

    @property
    def include(self) -> list[str]:
        value = getattr(self.req, "include", None)
        return [str(v) for v in value] if isinstance(value, list) else []

    def output(self, text: str | None, tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        if self.retrieval is not None:
            items.append(search_item(self.retrieval, _new_id("fs"), "file_search_call.results" in self.include))
        if text:
            items.append(message_item(_new_id("msg"), text, "completed",
                                      citations(self.retrieval, text) if self.retrieval is not None else None))
        for tc in tool_calls:
            fn = tc.get("function") or {}
            items.append({"type": "function_call", "id": _new_id("fc"), "call_id": tc.get("id") or _new_id("call"),
                          "name": fn.get("name") or "", "arguments": fn.get("arguments") or "{}",
                          "status": "completed"})
        return items

    def response(self, call: CallRecord, status: str, output: list[dict[str, Any]],
                 error: dict[str, Any] | None = None) -> dict[str, Any]:
        r = self.req
        usage = {"input_tokens": call.prompt_tokens, "output_tokens": call.completion_tokens,
                 "total_tokens": call.prompt_tokens + call.completion_tokens,
                 "input_tokens_details": {"cached_tokens": call.cached_tokens or 0},
                 "output_tokens_details": {"reasoning_tokens": 0}} if status != "in_progress" else None
        return {"id": self.id, "object": "response", "created_at": self.created_at, "status": status,
                "model": call.route or r.model, "output": output, "usage": usage, "error": error,
                "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
                "instructions": self.system["content"] if self.system else r.instructions,
                "max_output_tokens": r.max_output_tokens,
                "temperature": r.temperature, "top_p": r.top_p, "tools": r.tools or [],
                "tool_choice": r.tool_choice or "auto", "parallel_tool_calls": r.parallel_tool_calls is not False,
                "previous_response_id": r.previous_response_id, "store": r.store,
                "text": {"format": {"type": "text"}}, "metadata": getattr(r, "metadata", None) or {}}

    def conversation(self, text: str | None, tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The chat messages a later ``previous_response_id`` continues: prior turns, input, answer (no
        instructions: as in OpenAI, they do not carry over)."""
        answer: dict[str, Any] = {"role": "assistant", "content": text or None}
        if tool_calls:
            answer["tool_calls"] = [{"id": tc.get("id"), "type": "function", "function": tc.get("function")}
                                    for tc in tool_calls]
        return [*self.prior, *self.input, answer]


def message_item(item_id: str, text: str, status: str,
                 annotations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": annotations or [], "logprobs": []}] \
        if status != "in_progress" else []
    return {"type": "message", "id": item_id, "role": "assistant", "status": status, "content": content}


# --- streaming --------------------------------------------------------------------------------------------


class Events:
    """The Responses events of one stream, numbered."""

    def __init__(self) -> None:
        self.seq = 0

    def __call__(self, kind: str, **fields: Any) -> bytes:
        obj = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


async def events(relayed: AsyncIterator[Any], turn: Turn, call: CallRecord,
                 store: ResponseStore) -> AsyncIterator[bytes]:
    """The chat relay's SSE (chunks, then ``[DONE]`` or an error event) as Responses events."""
    ev, msg_id = Events(), _new_id("msg")
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish: str | None = None
    yield ev("response.created", response=turn.response(call, "in_progress", []))
    yield ev("response.in_progress", response=turn.response(call, "in_progress", []))
    try:
        async for chunk in _chunks(relayed):
            if "error" in chunk:
                err = chunk["error"]
                yield ev("error", code=err.get("code") or err.get("type"), message=err.get("message"), param=None)
                failed = {"code": "server_error", "message": err.get("message") or "The engine failed."}
                yield ev("response.failed", response=turn.response(call, "failed", [], failed))
                return
            for choice in chunk.get("choices") or []:
                finish = choice.get("finish_reason") or finish
                delta = choice.get("delta") or {}
                for tc in delta.get("tool_calls") or []:
                    _merge(calls, tc)
                if delta.get("content"):
                    if not text:
                        yield ev("response.output_item.added", output_index=0,
                                 item=message_item(msg_id, "", "in_progress"))
                        yield ev("response.content_part.added", item_id=msg_id, output_index=0, content_index=0,
                                 part={"type": "output_text", "text": "", "annotations": []})
                    text.append(delta["content"])
                    yield ev("response.output_text.delta", item_id=msg_id, output_index=0, content_index=0,
                             delta=delta["content"], logprobs=[])
        answer = "".join(text)
        if text:
            part = {"type": "output_text", "text": answer, "annotations": [], "logprobs": []}
            yield ev("response.output_text.done", item_id=msg_id, output_index=0, content_index=0, text=answer,
                     logprobs=[])
            yield ev("response.content_part.done", item_id=msg_id, output_index=0, content_index=0, part=part)
            yield ev("response.output_item.done", output_index=0, item=message_item(msg_id, answer, "completed"))
        tool_calls = [calls[i] for i in sorted(calls)]
        output = turn.output(answer, tool_calls)
        if text:
            output[0]["id"] = msg_id
        for index, item in enumerate(output[1 if text else 0:], start=1 if text else 0):
            yield ev("response.output_item.added", output_index=index, item={**item, "status": "in_progress"})
            yield ev("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                     name=item["name"], arguments=item["arguments"])
            yield ev("response.output_item.done", output_index=index, item=item)
        status = "incomplete" if finish == "length" else "completed"
        response = turn.response(call, status, output)
        if turn.req.store and call.principal is not None:
            await store.put(turn.id, call.principal, turn.conversation(answer, tool_calls), response)
        yield ev(f"response.{status}", response=response)
    finally:
        await relayed.aclose()  # type: ignore[attr-defined]


async def _chunks(relayed: AsyncIterator[Any]) -> AsyncIterator[dict[str, Any]]:
    """The JSON of each ``data:`` line the relay sends (comments, such as a continuation's, skipped)."""
    async for raw in relayed:
        for line in bytes(raw).split(b"\n"):
            if line.startswith(b"data: {"):
                yield orjson.loads(line[6:])


def _merge(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    """One streamed ``tool_calls`` delta into the calls so far (ids and names come first, arguments in pieces)."""
    tc = calls.setdefault(int(delta.get("index") or 0), {"id": None, "function": {"name": "", "arguments": ""}})
    tc["id"] = delta.get("id") or tc["id"]
    fn = delta.get("function") or {}
    tc["function"]["name"] += fn.get("name") or ""
    tc["function"]["arguments"] += fn.get("arguments") or ""


# --- endpoints ---------------------------------------------------------------------------------------------


def store_of(request: Request) -> ResponseStore:
    app_state = request.app.state
    store: ResponseStore | None = getattr(app_state, "responses", None)
    if store is None:
        store = app_state.responses = ResponseStore(app_state.strata.db)
    return store


class ResponsesSurface:
    """The Responses API on the chat path: its request becomes a chat body, the chat answer (or stream)
    becomes Responses output items (or events), and the conversation is stored for ``previous_response_id``."""

    kind = operation = "chat"
    schema = ChatRequest
    cacheable = True
    shadowed = continuable = False

    def __init__(self, store: ResponseStore) -> None:
        self.store = store
        self.turn: Turn | None = None

    async def prepare(self, flow: Flow, raw: dict[str, Any]) -> dict[str, Any]:
        turn = self.turn = Turn(validate(ResponsesRequest, raw))
        if turn.req.previous_response_id is not None:
            assert flow.call.principal is not None
            row = await self.store.get(turn.req.previous_response_id, flow.call.principal)
            if row is None:
                raise NotFound(f"Previous response with id '{turn.req.previous_response_id}' not found.",
                               param="previous_response_id", code="previous_response_not_found")
            turn.prior = list(row.messages)
        body, turn.input = to_chat(turn.req, turn.prior)
        turn.system = body["messages"][0] if turn.req.instructions else None
        turn.retrieval = flow.retrieval = file_search(turn.req)
        return body

    def engine_call(self, flow: Flow, target: Target) -> Awaitable[dict[str, Any]]:
        assert flow.body is not None
        return target.engine.generate("chat", flow.body)

    async def answer(self, flow: Flow, result: dict[str, Any]) -> Response:
        assert self.turn is not None
        return await _answer(self.turn, flow.call, self.store, result)

    def stream(self, flow: Flow, relay: Relay) -> Response:
        assert self.turn is not None
        call = flow.call
        relay.want_usage = True
        response = RelayResponse(relay, {"x-request-id": call.request_id, "cache-control": "no-cache",
                                         **(call.headers or {})})
        response.body_iterator = events(relay.events(), self.turn, call, self.store)
        return response

    async def cached(self, flow: Flow, entry: Entry) -> Response:
        assert self.turn is not None
        return await _from_cache(self.turn, flow.call, self.store, entry)


async def create_response(request: Request) -> Response:
    state: AppState = request.app.state.strata
    call = CallRecord(request_id_of(request, state.new_id), "chat")
    call.trace = begin_trace(state, request, call.request_id)
    return await run(STAGES, Flow(state, request, call, ResponsesSurface(store_of(request))))


async def _from_cache(turn: Turn, call: CallRecord, store: ResponseStore, entry: Entry) -> Response:
    """The route's exact (or semantic) cache had the chat answer: as a Responses answer or stream."""
    call.headers = {**(call.headers or {}), "x-strata-cache": "hit"}
    if not turn.req.stream:
        return await _answer(turn, call, store, entry.response)
    call.first_token = call.last_token = time.perf_counter()
    chunks = [sse_event(c) for c in replay("chat", entry.response, False)]

    async def replayed() -> AsyncIterator[bytes]:
        for c in chunks:
            yield c

    return StreamingResponse(events(replayed(), turn, call, store), media_type="text/event-stream",
                             headers={"x-request-id": call.request_id, "cache-control": "no-cache", **call.headers})


async def _answer(turn: Turn, call: CallRecord, store: ResponseStore, result: dict[str, Any]) -> Response:
    choice = (result.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    text, tool_calls = message.get("content"), message.get("tool_calls") or []
    status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
    response = turn.response(call, status, turn.output(text, tool_calls))
    if turn.req.store:
        assert call.principal is not None
        await store.put(turn.id, call.principal, turn.conversation(text, tool_calls), response)
    return json_response(response, call.request_id, headers=call.headers)


async def retrieve_response(request: Request) -> Response:
    """``GET /v1/responses/{id}``: a stored response of this key; 404 for unknown, expired and others' alike."""
    state: AppState = request.app.state.strata
    rid = request_id_of(request, state.new_id)
    response_id = request.path_params["response_id"]
    try:
        principal = await state.governance.auth.authenticate_request(request)
        row = await store_of(request).get(response_id, principal)
        if row is None:
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id",
                           code="response_not_found")
        return json_response(row.response, rid)
    except StrataError as exc:
        return error_response(exc, rid)


routes = [
    Route("/v1/responses", create_response, methods=["POST"]),
    Route("/v1/responses/{response_id}", retrieve_response, methods=["GET"]),
]
