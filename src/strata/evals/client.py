"""The eval runner's calls: through the gateway's own HTTP API, so every case and every judge call is
governed (keys, limits, budgets), accounted in the ledger and traced like any client's request.

Each call carries ``X-Strata-Tags: eval_run=<run>,eval_role=<candidate|judge|embedding>`` (``strata usage --by
tag:eval_role`` shows what the judges cost) and an ``X-Request-Id`` of its own, so its ledger row is found.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from strata.errors import StrataError, UpstreamError


@dataclass(slots=True)
class Answer:
    text: str
    latency_s: float
    tokens: int | None
    request_id: str


class Gateway:
    def __init__(self, base_url: str, key: str, run_id: str, timeout: float = 120.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.run_id = run_id
        self.http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
                                      headers={"Authorization": f"Bearer {key}"})

    async def close(self) -> None:
        await self.http.aclose()

    def _headers(self, role: str, request_id: str) -> dict[str, str]:
        return {"X-Strata-Tags": f"eval_run={self.run_id},eval_role={role}", "X-Request-Id": request_id}

    async def post(self, path: str, body: dict[str, Any], role: str, request_id: str) -> dict[str, Any]:
        try:
            r = await self.http.post(path, json=body, headers=self._headers(role, request_id))
        except httpx.HTTPError as exc:
            raise UpstreamError(f"gateway unreachable: {exc!r}") from None
        if r.status_code != 200:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = r.text[:300]
            error = StrataError(f"{path}: HTTP {r.status_code}: {message}")
            error.status = r.status_code
            raise error
        data: dict[str, Any] = r.json()
        return data

    async def chat(self, route: str, messages: list[dict[str, Any]], role: str, request_id: str,
                   max_tokens: int, temperature: float = 0.0) -> Answer:
        started = time.perf_counter()
        data = await self.post("/v1/chat/completions", {"model": route, "messages": messages,
                                                         "max_tokens": max_tokens, "temperature": temperature},
                               role, request_id)
        latency = time.perf_counter() - started
        text = data["choices"][0]["message"].get("content") or ""
        usage = data.get("usage") or {}
        return Answer(text, latency, usage.get("total_tokens"), request_id)

    async def embed(self, route: str, texts: list[str], request_id: str) -> list[list[float]]:
        data = await self.post("/v1/embeddings", {"model": route, "input": texts}, "embedding", request_id)
        return [d["embedding"] for d in sorted(data["data"], key=lambda d: d["index"])]

    async def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        r = await self.http.request(method, path, json=body)
        if r.status_code >= 400:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = r.text[:300]
            raise StrataError(f"{method} {path}: HTTP {r.status_code}: {message}")
        data: dict[str, Any] = r.json()
        return data
