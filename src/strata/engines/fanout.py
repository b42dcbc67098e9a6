"""Choices an engine cannot answer in one call: parallel calls, one per choice, merged into one answer.

``n > 1`` on an engine without its own ``n``: each sample is its own call (``n: 1``; with a ``seed``,
sample ``j`` gets ``seed + j`` so the samples differ yet stay reproducible). An engine adapter may split
further (llama.cpp: one call per prompt of a text completion, see ``per_prompt``); call ``i`` of the list
answers choice ``i``, so prompt ``p``'s sample ``j`` is choice ``p * n + j``, as OpenAI numbers them.

Usage is the sum of the calls' (each call really processed its prompt, though a prompt cache makes the
repeats cheap and says so in ``cached_tokens``). Streams are interleaved as their chunks arrive, each
chunk's choice re-indexed, and the calls' usage chunks become one summed usage chunk at the end. If one
call fails, the others are cancelled and the failure is the answer's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

Call = Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]
Stream = Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]]
_DONE = object()


def samples(body: dict[str, Any], n: int) -> list[dict[str, Any]]:
    seed = body.get("seed")
    return [{**body, "n": 1, **({"seed": seed + i} if isinstance(seed, int) else {})} for i in range(n)]


def per_prompt(calls: list[dict[str, Any]], prompts: list[Any]) -> list[dict[str, Any]]:
    """Each call once per prompt, prompt-major: with ``calls`` the n samples, call ``p * n + j``."""
    return [{**call, "prompt": prompt} for prompt in prompts for call in calls]


def sum_usage(usages: list[Any]) -> dict[str, Any] | None:
    usages = [u for u in usages if isinstance(u, dict)]
    if not usages:
        return None
    out: dict[str, Any] = {k: sum(int(u.get(k) or 0) for u in usages)
                           for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    cached = [u["prompt_tokens_details"].get("cached_tokens") for u in usages
              if isinstance(u.get("prompt_tokens_details"), dict)]
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": sum(int(c or 0) for c in cached)}
    return out


async def generate_all(call: Call, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call(b)) for b in bodies]
    except ExceptionGroup as eg:  # the first failure is the answer's; the other calls were cancelled
        raise eg.exceptions[0] from None
    results = [t.result() for t in tasks]
    merged = dict(results[0])
    merged["choices"] = [{**(r.get("choices") or [{}])[0], "index": i} for i, r in enumerate(results)]
    usage = sum_usage([r.get("usage") for r in results])
    if usage is not None:
        merged["usage"] = usage
    if (timings := sum_timings([r.get("timings") for r in results])) is not None:
        merged["timings"] = timings
    return merged


def sum_timings(timings: list[Any]) -> dict[str, float] | None:
    """An engine's own timings (llama.cpp's), summed over the calls: the engine time the answer took."""
    found = [t for t in timings if isinstance(t, dict)]
    if not found:
        return None
    return {k: sum(float(t.get(k) or 0) for t in found) for k in ("prompt_ms", "predicted_ms")}


async def stream_all(stream: Stream, bodies: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

    async def pump(i: int, sub: dict[str, Any]) -> None:
        chunks = stream(sub)
        try:
            async for chunk in chunks:
                queue.put_nowait((i, chunk))
        except Exception as exc:
            queue.put_nowait((i, exc))
            return
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        queue.put_nowait((i, _DONE))

    tasks = [asyncio.create_task(pump(i, b)) for i, b in enumerate(bodies)]
    usages: list[dict[str, Any]] = []
    timings: list[Any] = []
    head: dict[str, Any] | None = None
    try:
        live = len(bodies)
        while live:
            i, item = await queue.get()
            if item is _DONE:
                live -= 1
                continue
            if isinstance(item, Exception):
                raise item
            chunk: dict[str, Any] = item
            if chunk.get("usage"):
                usages.append(chunk.pop("usage"))
            if "timings" in chunk:
                timings.append(chunk.pop("timings"))
            head = head or {k: chunk.get(k) for k in ("id", "object", "created", "model")}
            if not chunk.get("choices"):
                continue
            chunk["id"] = head["id"]
            chunk["choices"] = [{**c, "index": i} for c in chunk["choices"]]
            yield chunk
        usage = sum_usage(usages)
        if usage is not None and head is not None:
            spent = sum_timings(timings)
            yield {**head, "choices": [], "usage": usage, **({"timings": spent} if spent else {})}
    finally:
        for t in tasks:
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
