"""The ``openai`` engine: any OpenAI-compatible upstream over pooled HTTP (aiohttp).

Local engines reuse it too: their supervised worker processes speak the same protocol, so the gateway
talks to a local llama.cpp exactly the way it talks to a remote vLLM.

aiohttp rather than httpx: on this path the client is the largest per-request cost after the server
itself, and aiohttp measured 12x less CPU per request (bench/http_clients.py, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson

from strata.config.references import resolve_reference
from strata.engines.base import EngineHealth, Kind
from strata.engines.capabilities import PERMISSIVE, Capabilities
from strata.engines.config import OpenAIEngineConfig, UpstreamCapabilities
from strata.engines.fanout import generate_all, samples, stream_all
from strata.errors import (
    InvalidRequest,
    RateLimited,
    StrataError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

log = logging.getLogger(__name__)
PATHS: dict[str, str] = {"chat": "/chat/completions", "completion": "/completions", "embed": "/embeddings"}


@contextlib.contextmanager
def map_client_errors(upstream: str) -> Iterator[None]:
    """Translate aiohttp/asyncio failures into Strata's error tree at the boundary."""
    try:
        yield
    except StrataError:
        raise
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout(f"upstream {upstream} timed out") from exc
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamUnavailable(f"upstream {upstream} is unreachable: {exc.os_error}") from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
        raise UpstreamError(f"upstream {upstream} closed the connection mid-response") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"upstream {upstream} failed: {exc.__class__.__name__}: {exc}") from exc


class HttpEngine:
    """OpenAI-compatible client for one upstream base URL."""

    engine_type = "openai"
    # llama.cpp's server closes the connection after every streamed response without saying so
    close_after_stream = False

    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
        max_connections: int = 256,
        context_length: int | None = None,
        capabilities: Capabilities = PERMISSIVE,
    ) -> None:
        self.name = name
        self.capabilities = capabilities
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(sock_connect=connect_timeout, sock_read=read_timeout)
        self._max_connections = max_connections
        self._context_length = context_length
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_config(cls, name: str, cfg: OpenAIEngineConfig) -> HttpEngine:
        key = resolve_reference(cfg.api_key.get_secret_value(), f"deployment {name!r}: engine.api_key") \
            if cfg.api_key else None
        if key is None and cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
        return cls(
            name, cfg.base_url, cfg.model, api_key=key, connect_timeout=cfg.connect_timeout,
            read_timeout=cfg.read_timeout, max_connections=cfg.max_connections, context_length=cfg.context_length,
            capabilities=upstream_capabilities(cfg.capabilities),
        )

    @property
    def context_length(self) -> int | None:
        return self._context_length

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=30, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, json_serialize=lambda o: orjson.dumps(o).decode(),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def start(self) -> None:
        _ = self.session

    def _calls(self, kind: Kind, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The engine calls a request takes, call ``i`` answering choice ``i`` (see ``fanout``): one, or
        ``n`` when the engine cannot answer ``n`` itself."""
        n = body.get("n")
        return samples(body, n) if isinstance(n, int) and n > 1 and not self.capabilities.native_n else [body]

    async def generate(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        if len(calls := self._calls(kind, body)) > 1:
            return await generate_all(lambda b: self.generate_one(kind, b), calls)
        return await self.generate_one(kind, calls[0])

    def stream(self, kind: Kind, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        if len(calls := self._calls(kind, body)) > 1:
            return stream_all(lambda b: self.stream_one(kind, b), calls)
        return self.stream_one(kind, calls[0])

    async def generate_one(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post_json(PATHS[kind], body)

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post_json(PATHS["embed"], body)

    async def _post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with map_client_errors(self.name):
            async with await self._send(path, body) as r:
                raw = await r.read()
                if r.status >= 400:
                    raise upstream_status_error(self.name, r.status, raw)
        return _json_object(self.name, raw, "response")

    async def stream_one(self, kind: Kind, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Yield each SSE ``data:`` object; closing the iterator aborts the upstream request."""
        with map_client_errors(self.name):
            async with await self._send(PATHS[kind], body) as r:
                if r.status >= 400:
                    raise upstream_status_error(self.name, r.status, await r.read())
                done = False
                async for line in r.content:
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        break
                    chunk = _json_object(self.name, payload, "stream event")
                    if "error" in chunk and "choices" not in chunk:
                        raise UpstreamError(f"upstream {self.name} error: {_message(chunk)}")
                    yield chunk
                if not done:
                    raise UpstreamError(f"upstream {self.name} ended the stream without [DONE]")
                if self.close_after_stream:
                    r.close()

    async def _send(self, path: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """POST, retrying once when the request could not even be written to a pooled keep-alive connection
        (the server had closed it). Only that case: a connection dropped after the request was sent may
        mean the upstream already did the work, and that is left to the route's retry policy.
        """
        data = orjson.dumps(body)
        try:
            return await self.session.post(self.base_url + path, data=data, headers=self._headers)
        except aiohttp.ClientOSError as exc:
            if isinstance(exc, aiohttp.ClientConnectorError) or "write request body" not in str(exc):
                raise
            log.debug("upstream %s: stale pooled connection (%s), retrying once", self.name, exc)
            return await self.session.post(self.base_url + path, data=data, headers=self._headers)

    async def health(self) -> EngineHealth:
        try:
            with map_client_errors(self.name):
                async with self.session.get(
                    self.base_url + "/models", headers=self._headers, timeout=aiohttp.ClientTimeout(total=5)
                ) as r:
                    ok = r.status < 500
                    return EngineHealth(ready=ok, state="ready" if ok else "unhealthy", detail=f"HTTP {r.status}",
                                        extra={"capabilities": self.capabilities.summary()})
        except StrataError as exc:
            return EngineHealth(ready=False, state="unreachable", detail=exc.message,
                                extra={"capabilities": self.capabilities.summary()})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _json_object(name: str, payload: bytes, what: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        raise UpstreamError(f"upstream {name} sent an invalid {what} (not a JSON object)")
    return obj


def _message(obj: Any) -> str:
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err)
        if err is not None:
            return str(err)
        if "detail" in obj:
            return str(obj["detail"])
    return str(obj)[:300]


def upstream_status_error(name: str, status: int, raw: bytes) -> StrataError:
    """Map an upstream HTTP error to ours (``upstream_status`` keeps what it answered)."""
    exc = _status_error(name, status, raw)
    exc.upstream_status = status
    return exc


def _status_error(name: str, status: int, raw: bytes) -> StrataError:
    """Its 4xx are the client's fault, its 5xx are ours (502)."""
    try:
        message = _message(orjson.loads(raw))
    except orjson.JSONDecodeError:
        message = raw[:300].decode(errors="replace") or f"HTTP {status}"
    if status == 429:
        return RateLimited(f"upstream {name} is rate limiting: {message}")
    if status in (400, 413, 422):
        return InvalidRequest(message)
    if status == 503:
        return UpstreamUnavailable(f"upstream {name} is unavailable (503): {message}")
    if status == 504:
        return UpstreamTimeout(f"upstream {name} timed out (504): {message}")
    return UpstreamError(f"upstream {name} returned HTTP {status}: {message}")


async def cancel_quietly(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def upstream_capabilities(cfg: UpstreamCapabilities) -> Capabilities:
    return Capabilities(tools=cfg.tools, vision=cfg.vision, audio=cfg.audio, audio_output=cfg.audio,
                        json_schema=cfg.json_schema, logprobs=cfg.logprobs, max_n=cfg.max_n,
                        native_n=cfg.native_n, embedding_size=cfg.embedding_size, dimensions=cfg.dimensions)


def openai_engine(name: str, cfg: OpenAIEngineConfig, **common: Any) -> HttpEngine:
    return HttpEngine.from_config(name, cfg)
