"""The relay of a stream from the engine to the client (``Relay``, ``RelayResponse``); when the stream ends,
however it ends, the relay runs the request's way out through the stages (``pipeline.stage.finish``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from strata.errors import InternalError, StrataError
from strata.gateway.cache import assembled
from strata.gateway.http import SSE_DONE, sse_event
from strata.gateway.schemas import openai_shaped
from strata.pipeline.attempt import ClientGone, end_stream, retryable
from strata.pipeline.continuation import Continuation
from strata.pipeline.flow import Flow
from strata.pipeline.guard import stream_ended
from strata.pipeline.stage import finish
from strata.routing.router import Target

log = logging.getLogger(__name__)
DISCONNECTED = ClientGone("The client disconnected.")


class Relay:
    """One stream from the engine to the client. ``close`` releases everything the request holds (the
    attempt's in-flight count and breaker outcome, the request's in-flight gauge and budget hold, the
    upstream stream) exactly once, wherever the stream ends: done, failed, or cut by the client, even
    before its first chunk (see ``RelayResponse``).

    With a ``Continuation`` (the route's ``continue_streams``), an upstream failure mid-stream is continued
    once on another deployment: its chunks are spliced in (same id, model, choice index; usage summed), after
    an SSE comment ``: strata-continued from=A to=B after=N chars``, and the chunk with the finish reason
    carries ``"strata": {"continued": true, ...}``."""

    __slots__ = ("flow", "state", "call", "target", "chunks", "first", "want_usage", "started", "outcome",
                 "closed", "engine_ms", "resume", "text", "id", "continued", "carried", "attempt_open")

    def __init__(self, flow: Flow, target: Target, chunks: AsyncIterator[dict[str, Any]],
                 first: dict[str, Any] | None, want_usage: bool, started: float,
                 resume: Continuation | None = None) -> None:
        self.flow, self.state, self.call = flow, flow.state, flow.call
        self.target, self.chunks, self.first = target, chunks, first
        self.want_usage, self.started = want_usage, started
        self.outcome: StrataError | None = DISCONNECTED  # until the stream ends otherwise
        self.closed = False
        self.engine_ms: float | None = None  # the engine's own time, from its last chunk (llama.cpp's timings)
        self.resume = resume
        self.text: list[str] | None = [] if resume is not None else None  # what a continuation goes on from
        self.id: Any = None  # the stream's id, kept across a continuation
        self.continued: dict[str, Any] | None = None  # from, to, after_chars once continued
        self.carried = (0, 0)  # prompt and completion tokens of the broken attempt, added to the usage
        self.attempt_open = True  # False when a failed continuation already closed the attempt

    async def close(self) -> None:
        """Account for the stream; before its last event, so the ledger row is journaled before the client
        has it all."""
        if self.closed:
            return
        self.closed = True
        call, state, target = self.call, self.state, self.target
        if self.outcome is DISCONNECTED:
            call.status, call.error_type = 499, "client_disconnected"
        if self.attempt_open:
            end_stream(state, call, target, self.started, self.outcome)
            if self.continued is not None:
                call.attempts[-1]["continues"] = {"from": self.continued["from"],
                                                  "after_chars": self.continued["after_chars"]}
        if self.engine_ms is not None:
            call.engine_time(self.engine_ms)
        call.settle_stream_usage()
        if self.continued is not None and call.trace is not None and self.flow.root is not None:
            self.flow.root.set("strata.continued", True)
        self.flow.target = target
        if call.guard is not None and self.outcome is None:
            with anyio.CancelScope(shield=True):
                await stream_ended(self.flow)
        assert self.flow.stages is not None  # run set them before any stage could start a relay
        finish(self.flow.stages, self.flow)
        with anyio.CancelScope(shield=True):
            await self.chunks.aclose()  # type: ignore[attr-defined]

    async def events(self) -> AsyncIterator[bytes]:
        call, chunk = self.call, self.first
        try:
            while chunk is not None:
                if (event := self._event(chunk)) is not None:
                    yield event
                try:
                    chunk = await anext(self.chunks, None)
                except StrataError as exc:
                    if (note := await self._continue(exc)) is None:
                        raise
                    yield note
                    chunk = self.first
            self.outcome = None
            if call.cache_key is not None and call.answer is not None:
                call.cached = assembled(call.endpoint, call.request_id, call.route or "", "".join(call.answer),
                                        call.finish, {"prompt_tokens": call.prompt_tokens,
                                                      "completion_tokens": call.completion_tokens,
                                                      "total_tokens": call.prompt_tokens + call.completion_tokens})
            await self.close()
            yield SSE_DONE
        except StrataError as exc:  # after the first byte: never retried, the stream ends with an error event
            call.fail(exc)
            self.outcome = exc
            await self.close()
            yield sse_event(exc.to_dict())
        except Exception as exc:  # a bug, or a chunk Strata's own code cannot handle
            log.error("request %s: unhandled error in the stream", call.request_id, exc_info=exc)
            err = InternalError("Internal error in the gateway.")
            call.fail(err)
            self.outcome = err
            await self.close()
            yield sse_event(err.to_dict())
        finally:
            await self.close()

    def _event(self, chunk: dict[str, Any]) -> bytes | None:
        """The SSE event of one engine chunk, or None when the client is not to see it."""
        call = self.call
        usage = self._take(chunk)
        if self.continued is None:
            self.id = chunk.get("id")
        else:
            chunk["id"] = self.id
        if chunk.get("choices"):
            chunk["model"] = call.route
            if not self.want_usage and usage:
                chunk.pop("usage", None)
            if self.continued is not None and chunk["choices"][0].get("finish_reason"):
                chunk["strata"] = {"continued": True, **self.continued}
            return sse_event(chunk)
        if self.want_usage and usage:
            chunk["model"] = call.route
            return sse_event(chunk)
        return None

    async def _continue(self, exc: StrataError) -> bytes | None:
        """Go on on another deployment after ``exc`` broke the stream: the SSE comment that says so, or None
        (then the stream ends with ``exc``)."""
        resume, call = self.resume, self.call
        if resume is None or self.text is None or not retryable(exc):
            return None
        self.resume = None  # once per stream
        with anyio.CancelScope(shield=True):
            await self.chunks.aclose()  # type: ignore[attr-defined]
        broken, text = self.target, "".join(self.text)
        self.carried = (call.prompt_tokens or call.prompt_estimate, call.completion_tokens or call.chunks)
        opened = await resume.resume(self.state, call, broken, self.started, exc, text)
        if opened is None:
            self.attempt_open = False
            return None
        self.target, self.chunks, self.first, self.started = opened
        frm, to = broken.deployment.name, self.target.deployment.name
        self.continued = {"from": frm, "to": to, "after_chars": len(text)}
        log.info("request %s: stream of %s broke after %d chars (%s); continued on %s", call.request_id, frm,
                 len(text), exc.code or exc.type, to)
        return f": strata-continued from={frm} to={to} after={len(text)} chars\n\n".encode()

    def _take(self, chunk: dict[str, Any]) -> Any:
        """What one chunk tells the ledger and the metrics (usage, finish, tokens and their timing)."""
        call = self.call
        self.engine_ms = openai_shaped(chunk, call.endpoint, chunk=True) or self.engine_ms
        usage = chunk.get("usage")
        if usage and self.continued is not None and isinstance(usage, dict):
            usage = chunk["usage"] = _summed(usage, *self.carried)
        if usage:
            call.take_usage(usage)
        choices = chunk.get("choices")
        if choices:
            if choices[0].get("finish_reason"):
                call.finish = choices[0]["finish_reason"]
            if self.text is not None and (choices[0].get("delta") or {}).get("tool_calls"):
                self.text = None  # a tool call is not continued from text
            if _has_token(choices[0]):
                call.chunks += 1
                now = time.perf_counter()
                if call.first_token is None:
                    call.first_token = now
                    self.state.observe.metrics.ttft.labels(call.route, call.deployment).observe(now - call.started)
                else:
                    self.state.observe.metrics.itl.labels(call.route, call.deployment).observe(
                        now - (call.last_token or now))
                call.last_token = now
                if call.answer is not None or self.text is not None:
                    text = _token_text(choices[0])
                    if call.answer is not None:
                        call.answer.append(text)
                    if self.text is not None:
                        self.text.append(text)
        return usage


class RelayResponse(StreamingResponse):
    """The SSE response of a ``Relay``: the request's ``Disconnect`` cancels it when the client leaves
    (replacing Starlette's own listener), and the relay is closed however the response ends."""

    def __init__(self, relay: Relay, headers: dict[str, str]) -> None:
        super().__init__(relay.events(), media_type="text/event-stream", headers=headers)
        self.relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = self.relay.call.watch
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if watch is None or not watch.stop():
                raise
        except OSError:  # the client went away mid-write (servers of ASGI spec 2.4)
            pass
        finally:
            if watch is not None:
                watch.stop()
            await self.relay.close()
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


def _summed(usage: dict[str, Any], prompt: int, completion: int) -> dict[str, Any]:
    """A continuation's usage plus the broken attempt's (both prompts were processed, both outputs sent)."""
    p, c = int(usage.get("prompt_tokens") or 0) + prompt, int(usage.get("completion_tokens") or 0) + completion
    return {**usage, "prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _token_text(choice: dict[str, Any]) -> str:
    delta = choice.get("delta")
    return str((delta.get("content") if delta is not None else choice.get("text")) or "")


def _has_token(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta")
    if delta is not None:
        return bool(delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content"))
    return bool(choice.get("text"))
