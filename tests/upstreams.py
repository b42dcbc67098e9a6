"""Small real OpenAI-compatible upstream servers for injecting third-party faults.

One server, behaviour chosen by the requested ``model``:

- ``ok``: a fixed reply (JSON, or SSE with a usage chunk); ``prompt_tokens=7``, ``completion_tokens=3``
- ``err500``: HTTP 500 with an error body
- ``stall``: waits 60 s before answering (longer than any test's read timeout)
- ``stall-stream``: sends one SSE chunk, then stalls
- ``die``: closes the connection without answering (JSON) / after two chunks (SSE)
- ``slow``: answers after 0.3 s (to keep requests in flight)
- ``echo-auth``: replies with the Authorization header it received as the message content
- ``whoami``: replies with the upstream's own ``name`` as the message content (which replica served it)
- ``echo``: replies with the JSON of the messages (or prompt) it received (what the gateway sent on)
- ``continue``: continues a trailing assistant message (or a prompt) that ends with a prefix of the fixed
  reply, streaming the rest of the reply word by word (as an engine continuing a broken answer would)
- any mode, messages containing ``POISON``: HTTP 500, as llama.cpp answers input it cannot process
- ``err429``: HTTP 429 (the upstream rate limits); ``err400``: HTTP 400 (it rejects the request)
- ``slow-first``: sends its headers (SSE) or nothing (JSON), then waits ``first_delay`` seconds (30) before
  answering; a client that closes the connection meanwhile is counted in ``disconnects``
- ``tools``: calls a function (``TOOL_CALL``, named as the request's first tool) instead of answering in text,
  as JSON or as a stream of ``tool_calls`` deltas
- ``judge``: a fixed LLM-judge verdict, ``JUDGE_REPLY`` (score 4 of 5, and answer A of a pairwise question)
- ``malformed``: a 200 in OpenAI's shape whose ``usage`` counts are words (``"prompt_tokens": "seven"``), in the
  JSON answer and in the stream's first chunk

``/v1/embeddings`` answers with ``letter_counts`` of each input, so equal texts embed equally and
different texts differently; it counts its requests in ``embed_hits`` and fails with HTTP 500 while
``embed_mode`` is ``"err500"`` (``"slow"``: answers after 0.3 s).

Several instances stand in for the replicas of one route: each counts the completion requests it
received (``hits``) and keeps the last one's JSON body (``last_body``), and setting ``mode`` to one of
the names above makes it behave that way whatever model is asked for (flip it back to ``None`` to heal
it). ``/v1/models`` always answers, after ``models_delay`` seconds (0 unless a test makes health probes slow).

It runs in its own thread and event loop so it is independent of the code under test.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

from aiohttp import web

REPLY = "Hello from the fixed upstream."
JUDGE_REPLY = '{"score": 4, "winner": "A", "rationale": "fixed judge"}'
POISON = "<poison>"  # a request whose messages contain it gets 500 whatever the mode (input the engine chokes on)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _completion(model: str, content: str, chat: bool) -> dict[str, Any]:
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        return {"id": "chatcmpl-fixed", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [choice], "usage": usage}
    return {"id": "cmpl-fixed", "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": content, "finish_reason": "stop"}], "usage": usage}


def _chunk(model: str, content: str | None, chat: bool, finish: str | None = None) -> bytes:
    if chat:
        choice: dict[str, Any] = {"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}
        obj: dict[str, Any] = {"id": "chatcmpl-fixed", "object": "chat.completion.chunk", "model": model,
                               "created": 0, "choices": [choice]}
    else:
        obj = {"id": "cmpl-fixed", "object": "text_completion", "model": model, "created": 0,
               "choices": [{"index": 0, "text": content or "", "finish_reason": finish}]}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


async def _handle(request: web.Request) -> web.StreamResponse:
    upstream = request.app[UPSTREAM]
    upstream.hits += 1
    body = await request.json()
    upstream.last_body = body
    upstream.bodies.append(body)
    model = upstream.mode or body.get("model", "ok")
    chat = request.path.endswith("/chat/completions")
    if model == "err500" or POISON in json.dumps(body.get("messages", body.get("prompt"))):
        return web.json_response({"error": {"message": "upstream exploded", "type": "server_error"}}, status=500)
    if model == "err429":
        return web.json_response({"error": {"message": "slow down", "type": "rate_limit_error"}}, status=429)
    if model == "err400":
        return web.json_response({"error": {"message": "upstream rejects this", "type": "invalid_request_error"}},
                                 status=400)
    if model == "stall":
        await asyncio.sleep(60)
    if model == "slow":
        await asyncio.sleep(0.3)
    if model == "slow-first" and not body.get("stream") and not await _wait_first(request, upstream):
        return web.Response()
    if model == "die" and not body.get("stream"):
        assert request.transport is not None
        request.transport.abort()
        return web.Response()
    content = REPLY
    if model == "echo-auth":
        content = request.headers.get("Authorization", "")
    elif model == "whoami":
        content = upstream.name
    elif model == "echo":
        content = json.dumps(body.get("messages", body.get("prompt")))
    elif model == "judge":
        content = JUDGE_REPLY
    if upstream.replies:
        content = upstream.replies.pop(0)
    if model == "tools":
        return await _tool_call(request, body)
    if not body.get("stream"):
        answer = _completion(model, content, chat)
        if model == "malformed":
            answer["usage"] = MALFORMED_USAGE
        return web.json_response(answer)
    return await _stream(request, body, model, chat)


MALFORMED_USAGE = {"prompt_tokens": "seven", "completion_tokens": "three", "total_tokens": "ten"}
TOOL_CALL: dict[str, Any] = {"id": "call_fixed", "type": "function",
                             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


def _sse(choice: dict[str, Any], **extra: Any) -> bytes:
    obj = {"id": "chatcmpl-fixed", "object": "chat.completion.chunk", "model": "tools", "created": 0,
           "choices": [choice], **extra}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


async def _tool_call(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """``tools``: calls ``TOOL_CALL`` (its first tool's name) instead of answering in text."""
    name = ((body.get("tools") or [{}])[0].get("function") or {}).get("name") or "get_weather"
    call = {**TOOL_CALL, "function": {**TOOL_CALL["function"], "name": name}}
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    if not body.get("stream"):
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return web.json_response({"id": "chatcmpl-fixed", "object": "chat.completion", "created": 0, "model": "tools",
                                  "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                                  "usage": usage})
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    args = call["function"]["arguments"]
    deltas = [{"index": 0, "id": call["id"], "type": "function", "function": {"name": name, "arguments": ""}},
              {"index": 0, "function": {"arguments": args[:5]}}, {"index": 0, "function": {"arguments": args[5:]}}]
    for delta in deltas:
        await resp.write(_sse({"index": 0, "delta": {"tool_calls": [delta]}, "finish_reason": None}))
    await resp.write(_sse({"index": 0, "delta": {}, "finish_reason": "tool_calls"}, usage=usage))
    await resp.write(b"data: [DONE]\n\n")
    return resp


async def _wait_first(request: web.Request, upstream: FaultyUpstream) -> bool:
    """Wait ``first_delay`` seconds; False (and counted) when the client closed the connection meanwhile."""
    deadline = time.monotonic() + upstream.first_delay
    while time.monotonic() < deadline:
        if request.transport is None or request.transport.is_closing():
            upstream.disconnects += 1
            return False
        await asyncio.sleep(0.02)
    return True


async def _stream(request: web.Request, body: dict[str, Any], model: str, chat: bool) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    if model == "slow-first" and not await _wait_first(request, request.app[UPSTREAM]):
        return resp
    words = ["Hello", " from", " the", " fixed", " upstream."]
    if model == "continue":
        words = _rest(words, body)
    for i, word in enumerate(words):
        if model == "malformed" and i == 0:
            obj = json.loads(_chunk(model, word, chat)[6:])
            await resp.write(b"data: " + json.dumps({**obj, "usage": MALFORMED_USAGE}).encode() + b"\n\n")
            continue
        await resp.write(_chunk(model, word, chat))
        if model == "stall-stream":
            await asyncio.sleep(60)
        if model == "die" and i == 1:
            assert request.transport is not None
            request.transport.abort()
            return resp
    await resp.write(_chunk(model, None, chat, finish="stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}
        await resp.write(b"data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "model": model,
                                                  "created": 0, "choices": [], "usage": usage}).encode() + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    return resp


def _rest(words: list[str], body: dict[str, Any]) -> list[str]:
    """The words of the reply after the longest prefix of it that the request's text so far ends with."""
    messages = body.get("messages")
    if messages is not None:
        so_far = messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""
    else:
        so_far = str(body.get("prompt") or "")
    for i in range(len(words), 0, -1):
        if so_far.endswith("".join(words[:i])):
            return words[i:]
    return words


def letter_counts(text: str) -> list[float]:
    """A deterministic embedding: how often each letter a-z occurs, plus one (never the zero vector)."""
    lower = text.lower()
    return [float(lower.count(c)) for c in "abcdefghijklmnopqrstuvwxyz"] + [1.0]


async def _models(request: web.Request) -> web.Response:
    await asyncio.sleep(request.app[UPSTREAM].models_delay)
    return web.json_response({"object": "list", "data": [{"id": "ok", "object": "model"}]})


async def _embeddings(request: web.Request) -> web.Response:
    upstream = request.app[UPSTREAM]
    upstream.embed_hits += 1
    body = await request.json()
    if upstream.embed_mode == "err500":
        return web.json_response({"error": {"message": "embeddings exploded", "type": "server_error"}}, status=500)
    if upstream.embed_mode == "slow":
        await asyncio.sleep(0.3)
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    data = [{"object": "embedding", "index": i, "embedding": letter_counts(text)} for i, text in enumerate(inputs)]
    return web.json_response({"object": "list", "data": data, "model": body["model"],
                              "usage": {"prompt_tokens": 2 * len(inputs), "total_tokens": 2 * len(inputs)}})


async def _cancel_pending() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


UPSTREAM: web.AppKey[FaultyUpstream] = web.AppKey("upstream")


class FaultyUpstream:
    """Run the server in a background thread: ``with FaultyUpstream() as up: up.base_url``."""

    def __init__(self, name: str | None = None) -> None:
        self.port = free_port()
        self.name = name or f"upstream-{self.port}"
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.mode: str | None = None
        self.models_delay = 0.0
        self.hits = 0
        self.last_body: dict[str, Any] | None = None
        self.bodies: list[dict[str, Any]] = []  # every chat/completion body received
        self.replies: list[str] = []  # answers to give next, in order, before the mode's own
        self.embed_mode: str | None = None
        self.embed_hits = 0
        self.first_delay = 30.0  # slow-first: seconds before the first byte of the answer
        self.disconnects = 0  # slow-first: clients that closed the connection before it
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> FaultyUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app[UPSTREAM] = self
        app.router.add_post("/v1/chat/completions", _handle)
        app.router.add_post("/v1/completions", _handle)
        app.router.add_post("/v1/embeddings", _embeddings)
        app.router.add_get("/v1/models", _models)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        asyncio.run_coroutine_threadsafe(_cancel_pending(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
