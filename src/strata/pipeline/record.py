"""Per-request record: what the pipeline learns about a request, turned into one ledger row at the end."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from strata.errors import StrataError
from strata.governance.keys import Principal


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """About four characters per token, plus chat formatting (about 4 tokens per message and 3 to prime the
    answer). For limits and budgets at admission, and when an engine never reports usage."""
    if "messages" in body:
        chars = sum(len(m["content"]) if isinstance(m.get("content"), str) else len(str(m.get("content") or ""))
                    for m in body["messages"])
        return chars // 4 + 4 * len(body["messages"]) + 3
    else:
        chars = len(str(body.get("prompt") or body.get("input") or ""))
    return max(1, chars // 4)


class RequestIds:
    """Request ids unique per gateway start (random prefix) and cheap (a counter, no syscall)."""

    def __init__(self) -> None:
        self._prefix = "req_" + os.urandom(6).hex()
        self._next = itertools.count(1).__next__

    def __call__(self) -> str:
        return f"{self._prefix}{self._next():010x}"


@dataclass(slots=True)
class CallRecord:
    request_id: str
    endpoint: str
    started: float = field(default_factory=time.perf_counter)
    started_wall: float = field(default_factory=time.time)
    principal: Principal | None = None
    user: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    route: str | None = None
    deployment: str | None = None
    engine: str | None = None
    model: str | None = None
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token: float | None = None
    last_token: float | None = None
    chunks: int = 0
    prompt_estimate: int = 0
    admitted: bool = False
    attempts: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    error_type: str | None = None
    cost: float = 0.0
    latency_ms: float = 0.0
    role: str | None = None  # of the deployment that answered
    tier: str | None = None  # complexity routing
    route_score: float | None = None
    answer: list[str] | None = None  # the answer's text, collected only when a shadow will compare it
    governed: Any = None  # (rate-limit admission, budget reservation) to settle once the request ends
    headers: dict[str, str] | None = None  # extra response headers (x-ratelimit-*)
    cache_key: str | None = None  # exact cache: where to store the answer
    cached: dict[str, Any] | None = None  # the whole answer to store
    finish: str | None = None  # a stream's finish_reason
    saved: float | None = None  # a cache hit: what the answer cost when it was made
    cached_tokens: int | None = None  # prompt tokens the engine reused from its prompt cache
    semantic: Any = None  # semantic cache miss: (context key, vector, question) to store the answer under
    watch: Any = None  # http.Disconnect: cancels the request when its client leaves (from its body on)
    trace: Any = None  # observe.tracing.Trace of the request, when it is traced
    span: Any = None  # the span now running (a stage's): the parent of the spans it starts
    attempt_span: Any = None  # the span of the engine attempt in flight
    served_span: Any = None  # the span of the attempt that answered
    guard: Any = None  # guard.apply.Guarding: the request's guard rules and what they found
    rag: dict[str, Any] | None = None  # the chunks retrieval injected (``pipeline.retrieve``), for the ledger row

    @property
    def answer_text(self) -> str | None:
        return "".join(self.answer) if self.answer is not None else None

    def fail(self, exc: StrataError) -> None:
        self.status = exc.status
        self.error_type = exc.code or exc.type

    def engine_time(self, ms: float) -> None:
        """The engine's own time for the answer, in the ledger row's entry for the attempt that made it."""
        if self.attempts:
            self.attempts[-1]["engine_ms"] = ms

    def take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict) and details.get("cached_tokens") is not None:
                self.cached_tokens = int(details["cached_tokens"])

    def settle_stream_usage(self) -> None:
        """A stream cut before its usage chunk is still charged for what it delivered.

        Each content delta is counted as one token (llama.cpp and vLLM send one token per delta); the prompt,
        when the engine never reported it, is estimated from its length.
        """
        if self.completion_tokens == 0 and self.chunks:
            self.completion_tokens = self.chunks
            self.prompt_tokens = self.prompt_tokens or self.prompt_estimate

    def to_row(self, finished: float) -> dict[str, Any]:
        latency = finished - self.started
        self.latency_ms = latency * 1000
        ttft = tpot = None
        if self.first_token is not None:
            ttft = (self.first_token - self.started) * 1000
            if self.last_token is not None and self.completion_tokens > 1:
                tpot = (self.last_token - self.first_token) * 1000 / (self.completion_tokens - 1)
        p = self.principal
        return {
            "request_id": self.request_id,
            "started_at": datetime.fromtimestamp(self.started_wall, UTC),
            "finished_at": datetime.fromtimestamp(self.started_wall + latency, UTC),
            "endpoint": self.endpoint,
            "key_id": p.key_id if p else None,
            "team": p.team if p else None,
            "user": self.user,
            "tags": self.tags,
            "route": self.route,
            "deployment": self.deployment,
            "engine": self.engine,
            "model": self.model,
            "stream": self.stream,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_ms": latency * 1000,
            "ttft_ms": ttft,
            "tpot_ms": tpot,
            "status": self.status,
            "error_type": self.error_type,
            "cost_usd": self.cost,
            "attempts": self.attempts or None,
            "role": self.role,
            "tier": self.tier,
            "route_score": self.route_score,
            "saved_usd": self.saved,
            "cached_tokens": self.cached_tokens,
            "trace_id": self.trace.hex_id if self.trace is not None else None,
            "guard": self.guard.ledger() if self.guard is not None else None,
            "rag": self.rag,
        }
