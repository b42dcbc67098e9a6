"""Admission to a unified KV cache, so requests that together need more than ``n_ctx`` wait instead of failing.

With ``kv_unified`` llama.cpp's slots share one pool of ``n_ctx`` tokens: any single request may use all of
it, but when the requests in flight together need more, llama.cpp fails every one of them (measured: four
concurrent 1,000-token prompts on a 2,048-token pool, all four 500 "Context size has been exceeded"). So
one caller's long prompt could fail everybody else's requests. Each request therefore holds a share of the
pool for as long as it runs: its prompt's upper bound (its UTF-8 bytes) plus its ``max_tokens``; a request
without ``max_tokens`` gets the per-slot share ``n_ctx / n_parallel`` as its limit, so no answer can grow
past what it holds. A request whose share does not fit waits, first come first served, until enough is
released; one larger than the whole pool runs alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import orjson


def prompt_bound(body: dict[str, Any]) -> int:
    """An upper bound of a prompt's tokens: its UTF-8 bytes (a token is at least one byte) plus the chat
    template's framing (the tool instructions of ``chatml-tools`` included)."""
    if "messages" in body:
        messages = body.get("messages") or []
        text = "".join(str(m.get("content") or "") + str(m.get("tool_calls") or "") for m in messages
                       if isinstance(m, dict))
        tools = len(orjson.dumps(body["tools"])) + 256 if body.get("tools") else 0
        return len(text.encode()) + 8 * len(messages) + tools + 64
    prompt = body.get("prompt")
    return len((prompt if isinstance(prompt, str) else orjson.dumps(prompt).decode()).encode()) + 8


def output_limit(body: dict[str, Any]) -> int | None:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    return int(limit) if limit else None


class KvBudget:
    def __init__(self, tokens: int) -> None:
        self.total = tokens
        self.free = tokens
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def hold(self, tokens: int) -> AsyncIterator[None]:
        tokens = min(tokens, self.total)
        if self._waiting or tokens > self.free:
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append((tokens, granted))
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():
                    self._release(tokens)  # granted just as the caller gave up
                else:
                    with contextlib.suppress(ValueError):
                        self._waiting.remove((tokens, granted))
                    self._wake()
                raise
        else:
            self.free -= tokens
        try:
            yield
        finally:
            self._release(tokens)

    def _release(self, tokens: int) -> None:
        self.free += tokens
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self._waiting[0][0] <= self.free:
            tokens, granted = self._waiting.popleft()
            if granted.done():  # its caller was cancelled and is about to leave the queue
                continue
            self.free -= tokens
            granted.set_result(None)
