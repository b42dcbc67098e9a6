"""Fixed-reply OpenAI-compatible upstream for gateway overhead benchmarks.

A gateway benchmark needs an upstream that is never the bottleneck, so this is
written on a raw asyncio Protocol + httptools + uvloop (no framework) and every
reply is a precomputed byte string. Routes:

  POST /v1/chat/completions   fixed chat.completion (usage 10/5), or a short SSE
                              stream when "stream": true (usage chunk when
                              stream_options.include_usage), ending "data: [DONE]"
  GET  /v1/models             one model, "fixed"
  GET  /health, GET /readyz   {"status":"ok"} (/readyz lets this server stand in for
                              Strata when self-testing bench/gateway_overhead.py)

Usage: python bench/fixed_upstream.py --port 18000 [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

import httptools
import orjson
import uvloop

CREATED = 1700000000
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
PIECES = ["Hello", " from", " the", " fixed", " upstream."]


def _response(status: str, body: bytes, ctype: bytes = b"application/json") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: ".encode() + ctype
    return head + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body


def _chat_body(model: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-fixed",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(PIECES)},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": USAGE,
        }
    )


def _chunk(model: str, delta: dict[str, str], finish: str | None) -> dict[str, object]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
    return {
        "id": "chatcmpl-fixed",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "choices": [choice],
    }


def _stream_reply(model: str, include_usage: bool) -> bytes:
    """Full HTTP response: chunked transfer encoding, one HTTP chunk per SSE event."""
    events = [_chunk(model, {"role": "assistant", "content": ""}, None)]
    events += [_chunk(model, {"content": p}, None) for p in PIECES]
    events.append(_chunk(model, {}, "stop"))
    if include_usage:
        events.append({**_chunk(model, {}, None), "choices": [], "usage": USAGE})
    payloads = [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    head += b"transfer-encoding: chunked\r\n\r\n"
    chunks = [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in payloads]
    return head + b"".join(chunks) + b"0\r\n\r\n"


STATIC: dict[tuple[bytes, bytes], bytes] = {
    (b"GET", b"/health"): _response("200 OK", b'{"status":"ok"}'),
    (b"GET", b"/readyz"): _response("200 OK", b'{"status":"ok"}'),
    (b"GET", b"/v1/models"): _response(
        "200 OK",
        orjson.dumps(
            {
                "object": "list",
                "data": [{"id": "fixed", "object": "model", "created": CREATED, "owned_by": "bench"}],
            }
        ),
    ),
}
NOT_FOUND = _response("404 Not Found", b'{"error":{"message":"not found","type":"not_found"}}')
BAD_REQUEST = _response("400 Bad Request", b'{"error":{"message":"bad request","type":"invalid_request"}}')
_cache: dict[tuple[str, bool, bool], bytes] = {}


def chat_reply(body: bytes) -> bytes:
    """Reply for one chat request; cached per (model, stream, include_usage)."""
    try:
        req = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        return BAD_REQUEST
    if not isinstance(req, dict):
        return BAD_REQUEST
    model = req.get("model")
    if not isinstance(model, str):
        model = "fixed"
    stream = req.get("stream") is True
    opts = req.get("stream_options")
    usage = stream and isinstance(opts, dict) and opts.get("include_usage") is True
    key = (model, stream, usage)
    reply = _cache.get(key)
    if reply is None:
        reply = _stream_reply(model, usage) if stream else _response("200 OK", _chat_body(model))
        if len(_cache) < 1024:
            _cache[key] = reply
    return reply


class HttpProtocol(asyncio.Protocol):
    """One connection: keep-alive and pipelining handled by the httptools parser."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transport is not an asyncio.Transport subclass; it has the same API.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reply(BAD_REQUEST, keep_alive=False)
        except httptools.HttpParserError:
            self._reply(BAD_REQUEST, keep_alive=False)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        if method == b"POST" and path == b"/v1/chat/completions":
            reply = chat_reply(b"".join(self.body))
        else:
            reply = STATIC.get((method, path), NOT_FOUND)
        self._reply(reply, keep_alive=self.parser.should_keep_alive())

    def _reply(self, reply: bytes, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(reply)
        if not keep_alive:
            transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HttpProtocol, host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"fixed_upstream listening on http://{host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
