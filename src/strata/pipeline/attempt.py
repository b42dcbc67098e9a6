"""The attempt machinery of the ``call`` stage (and of internal calls): try the route's deployments until one
answers, before the first byte.

Retries on upstream failures (connection errors, 5xx, timeouts, an upstream's 429) with jittered,
doubling backoff, then walks the fallbacks; never after the first byte has reached the client. A
per-route deadline bounds all attempts together. Every attempt lands in the ledger row.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from strata.errors import InternalError, InvalidRequest, RateLimited, StrataError, UpstreamError, UpstreamTimeout
from strata.gateway.state import AppState
from strata.pipeline.record import CallRecord, estimate_prompt_tokens
from strata.pipeline.telemetry import attempt_ended, attempt_span
from strata.routing.router import Attempts, Target

T = TypeVar("T")
log = logging.getLogger(__name__)


class ClientGone(StrataError):
    status = 499
    type = "client_error"
    code = "client_disconnected"


CANCELLED = ClientGone("The request was cancelled.")
INTERNAL = InternalError("Internal error in the gateway.")


def retryable(exc: StrataError) -> bool:
    return isinstance(exc, UpstreamError | RateLimited)


async def call_engine(state: AppState, call: CallRecord, req: Any, body: dict[str, Any], attempts: Attempts,
                      fn: Callable[[Target], Awaitable[T]]) -> tuple[Target, T]:
    """Return the target that answered and its result; raise the last failure if none did.

    Failed attempts reach the breakers once the request's outcome is known (see ``routing.outlier``).
    """
    route = attempts.route
    deadline = call.started + route.deadline if route.deadline else None
    delay = route.retry_backoff
    last: StrataError | None = None
    failed: list[Target] = []
    served = False
    try:
        while (target := attempts.next()) is not None:
            if attempts.panic:
                state.observe.metrics.panic_requests.labels(route.name).inc()
            check_context(req, target)
            if state.governance.governor.policies.limits and state.governance.governor.limits.has_deployment_limits():
                try:
                    await _deployment_limits(state, call, target, body)
                except RateLimited as exc:  # this deployment is at its own limit: the next one, no breaker penalty
                    call.attempts.append({"deployment": target.deployment.name, "outcome": exc.code, "status": 429,
                                          "ms": 0.0})
                    last = exc
                    continue
            call.deployment, call.engine = target.deployment.name, target.engine.engine_type
            call.role = target.deployment.role
            call.model = target.engine.model
            body["model"] = target.engine.model
            if call.trace is not None:
                call.attempt_span = attempt_span(call, target, call.endpoint, len(call.attempts) + 1)
            started = begin(target)
            try:
                result = await _within(fn(target), deadline, route.name)
            except asyncio.CancelledError:
                end(state, call, target, started, CANCELLED)
                raise
            except StrataError as exc:
                end(state, call, target, started, exc, judged=False)
                if not retryable(exc):
                    raise
                failed.append(target)
                last = exc
                if not await _backoff(delay, deadline):
                    break
                delay *= 2
                continue
            except Exception:  # a bug, or an answer Strata's own code cannot handle: the attempt still ends
                end(state, call, target, started, INTERNAL)
                raise
            served = True
            return target, result
        raise last or attempts.unavailable()
    finally:
        if failed:
            judge(state, call, failed, served)


def check_context(req: Any, target: Target) -> None:
    limit = getattr(req, "output_limit", None)
    window = target.engine.context_length
    if limit is not None and window is not None and limit > window:
        field = "max_completion_tokens" if getattr(req, "max_completion_tokens", None) else "max_tokens"
        raise InvalidRequest(
            f"{field} is too large: {limit}. This model's maximum context length is {window} tokens.",
            param=field, code="context_length_exceeded")


async def timed(aw: Awaitable[T]) -> tuple[T, float]:
    """The result of ``aw`` and when it started (for the attempt's ``end``)."""
    started = time.perf_counter()
    return await aw, started


def end_stream(state: AppState, call: CallRecord, target: Target, started: float, exc: StrataError | None) -> None:
    """Close a stream's attempt; a failure after the first byte is judged like a request that failed everywhere."""
    failed = exc is not None and retryable(exc)
    end(state, call, target, started, exc, judged=not failed)
    if failed:
        judge(state, call, [target], served=False)


def judge(state: AppState, call: CallRecord, failed: list[Target], served: bool) -> None:
    """Give the failed attempts of one request to the breakers, or to the caller when they are its fault.

    Served elsewhere: each failed attempt counts against its deployment. Failed everywhere: once per
    deployment that nobody else was served by within the window; when all of them served other callers,
    the failure is the request's, and a key that keeps sending such requests is slowed down.
    """
    if served:
        for t in failed:
            _failure(state, t)
        return
    key = call.principal.key_id if call.principal is not None else None
    route = failed[0].route
    blamed = {t.deployment.name: t for t in failed
              if not t.runtime.served.by_other_since(key, t.runtime.breaker.clock() - route.breaker.window)}
    for t in blamed.values():
        _failure(state, t)
    state.observe.metrics.request_failures.labels(route.name, "deployment" if blamed else "request").inc()
    if blamed or key is None:
        return
    cooldown = state.governance.callers.failed(route.name, key, route.breaker)
    if cooldown is not None:
        throttled(state, route.name, key, cooldown)


def throttled(state: AppState, route: str, key: str, cooldown: float) -> None:
    """One event per throttle: which key, on which route, for how long."""
    state.observe.metrics.callers_throttled.labels(route).inc()
    message = (f"key {key}: its requests to {route!r} keep failing upstream while other callers are served; "
               f"429 for {cooldown:.0f}s")
    log.warning(message)

    async def emit() -> None:
        await asyncio.to_thread(state.observe.events.emit, "caller_throttled", key, message,
                                {"route": route, "cooldown_s": cooldown})

    task = asyncio.create_task(emit())
    state.tasks.background.add(task)
    task.add_done_callback(state.tasks.background.discard)


def _failure(state: AppState, target: Target) -> None:
    target.runtime.breaker.failure()
    state.routing.rollouts.record(target.route.name, target.deployment.role, False)


async def _deployment_limits(state: AppState, call: CallRecord, target: Target, body: dict[str, Any]) -> None:
    admission = await state.governance.governor.limits.admit_deployment(target.deployment.name,
                                                                        estimate_prompt_tokens(body))
    if admission is None:
        return
    base, reservation = call.governed or (None, None)
    if base is None:
        call.governed = (admission, reservation)
    else:
        base.tokens += admission.tokens  # the completion is charged to the deployment's TPM too


def begin(target: Target) -> float:
    target.runtime.outstanding += 1
    target.runtime.breaker.begin()
    return time.perf_counter()


def end(state: AppState, call: CallRecord, target: Target, started: float, exc: StrataError | None = None,
        judged: bool = True) -> None:
    """Close one attempt: in-flight count, breaker outcome, attempt metric and ledger entry.

    ``judged=False``: a retryable failure whose breaker outcome ``judge`` decides once the request is over.
    """
    target.runtime.outstanding -= 1
    name = target.deployment.name
    breaker = target.runtime.breaker
    if exc is None:
        breaker.success()
        target.runtime.served.record(call.principal.key_id if call.principal else None, breaker.clock())
        if call.principal is not None:
            state.governance.callers.succeeded(target.route.name, call.principal.key_id)
        outcome = "ok"
    else:
        outcome = exc.code or exc.type
        if retryable(exc):
            if judged:
                _failure(state, target)
        elif exc.status == 499:
            breaker.release()  # the client left: says nothing about the deployment's health
        else:
            breaker.success()  # the upstream answered (e.g. a 400 for a bad request): it is alive
    took = time.perf_counter() - started
    state.observe.metrics.attempt_ended(name, outcome, took)
    if (span := call.attempt_span) is not None:
        call.attempt_span = None
        attempt_ended(span, call, outcome, exc)
    call.attempts.append({"deployment": name, "outcome": outcome, "status": 200 if exc is None else exc.status,
                          "ms": round(took * 1000, 2)})


async def _within(aw: Awaitable[T], deadline: float | None, route: str) -> T:
    if deadline is None:
        return await aw
    try:
        return await asyncio.wait_for(aw, max(deadline - time.perf_counter(), 0.001))
    except TimeoutError:
        raise UpstreamTimeout(f"route {route} deadline exceeded", code="deadline_exceeded") from None


async def _backoff(delay: float, deadline: float | None) -> bool:
    """Sleep a jittered ``delay``; False when the deadline leaves no room for another attempt."""
    pause = delay * (0.5 + random.random())
    if deadline is not None and time.perf_counter() + pause >= deadline:
        return False
    if pause:
        await asyncio.sleep(pause)
    return True
