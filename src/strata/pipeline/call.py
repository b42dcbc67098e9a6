"""Stage ``call``: the engine call, through the attempt machinery (``pipeline.attempt``: retries, fallbacks,
breakers, in-flight limits, one span and one ledger entry per attempt). A JSON answer is accounted here; a
stream is handed to its relay (``gateway.relay``), which splices a continuation in when the route continues
broken streams (``pipeline.continuation``) and runs the way out when the stream ends."""

from __future__ import annotations

import time
from collections.abc import Coroutine
from typing import Any

from starlette.responses import Response

from strata.gateway.relay import Relay
from strata.gateway.schemas import openai_shaped
from strata.gateway.shadow import answer_text
from strata.pipeline.attempt import call_engine, end, timed
from strata.pipeline.continuation import Continuation
from strata.pipeline.flow import Flow
from strata.pipeline.guard import again, check_answer
from strata.pipeline.record import estimate_prompt_tokens
from strata.pipeline.stage import Stage
from strata.routing.router import Attempts, Target


class Call(Stage):
    name = "strata.call"

    def before(self, flow: Flow) -> Coroutine[Any, Any, Response]:
        """The JSON answer's or the stream's coroutine itself: no frame of its own that every wake-up of the
        engine call would pass through."""
        return self._stream(flow) if getattr(flow.req, "stream", False) else self._json(flow)

    async def _json(self, flow: Flow) -> Response:
        call, surface = flow.call, flow.surface
        assert flow.attempts is not None
        target, result = await self._generate(flow, flow.attempts)
        if call.guard is not None and call.guard.any("output"):  # output guards, which may call once more
            target, result = await check_answer(flow, target, result, lambda: self._generate(flow, again(flow)))
        if call.answer is not None:
            call.answer.append(answer_text(result))
        if call.endpoint != "embeddings":
            choices = result.get("choices") or [{}]
            call.finish = choices[0].get("finish_reason") if choices else None
        result["model"] = call.route
        if call.cache_key is not None:
            call.cached = result
        return await surface.answer(flow, result)

    async def _generate(self, flow: Flow, attempts: Attempts) -> tuple[Target, dict[str, Any]]:
        state, call, body, surface = flow.state, flow.call, flow.body, flow.surface
        assert body is not None
        target, (result, started) = await call_engine(state, call, flow.req, body, attempts,
                                                      lambda t: timed(surface.engine_call(flow, t)))
        flow.target = target
        end(state, call, target, started)
        if (engine_ms := openai_shaped(result, call.endpoint)) is not None:
            call.engine_time(engine_ms)
            call.headers = {**(call.headers or {}), "x-strata-engine-ms": str(engine_ms)}
        call.take_usage(result.get("usage"))
        return target, result

    async def _stream(self, flow: Flow) -> Response:
        state, call, body, req = flow.state, flow.call, flow.body, flow.req
        assert body is not None and flow.attempts is not None
        kind = flow.surface.kind
        want_usage = bool(getattr(req, "stream_options", None) and req.stream_options.include_usage)
        call.prompt_estimate = estimate_prompt_tokens(body)
        body["stream_options"] = {"include_usage": True}
        target, (chunks, first, started) = await call_engine(
            state, call, req, body, flow.attempts, lambda t: first_chunk(t, kind, body))
        flow.target = target
        resume = Continuation.of(kind, req, body, flow.attempts) if flow.surface.continuable else None  # type: ignore[arg-type]
        flow.relay = Relay(flow, target, chunks, first, want_usage, started, resume)
        return flow.surface.stream(flow, flow.relay)


async def first_chunk(target: Target, kind: Any, body: dict[str, Any]) -> tuple[Any, Any, float]:
    """Open the stream and wait for its first chunk, so an engine that fails early can be retried."""
    started = time.perf_counter()
    chunks = aiter(target.engine.stream(kind, body))
    return chunks, await anext(chunks, None), started
