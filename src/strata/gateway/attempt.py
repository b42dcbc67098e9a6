"""The "call engine" stage: try the route's deployments until one answers, before the first byte.

Retries on upstream failures (connection errors, 5xx, timeouts, an upstream's 429) with jittered,
doubling backoff, then walks the fallbacks; never after the first byte has reached the client. A
per-route deadline bounds all attempts together. Every attempt lands in the ledger row.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from strata.errors import RateLimited, StrataError, UpstreamError, UpstreamTimeout
from strata.gateway.context import CallRecord, estimate_prompt_tokens
from strata.gateway.pipeline import check_context
from strata.gateway.state import AppState
from strata.routing.router import Attempts, Target

T = TypeVar("T")


class ClientGone(StrataError):
    status = 499
    type = "client_error"
    code = "client_disconnected"


CANCELLED = ClientGone("The request was cancelled.")


def retryable(exc: StrataError) -> bool:
    return isinstance(exc, UpstreamError | RateLimited)


async def call_engine(state: AppState, call: CallRecord, req: Any, body: dict[str, Any], attempts: Attempts,
                      fn: Callable[[Target], Awaitable[T]]) -> tuple[Target, T]:
    """Return the target that answered and its result; raise the last failure if none did."""
    route = attempts.route
    deadline = call.started + route.deadline if route.deadline else None
    delay = route.retry_backoff
    last: StrataError | None = None
    while (target := attempts.next()) is not None:
        check_context(req, target)
        if state.governor.policies.limits and state.governor.limits.has_deployment_limits():
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
        started = begin(target)
        try:
            result = await _within(fn(target), deadline, route.name)
        except asyncio.CancelledError:
            end(state, call, target, started, CANCELLED)
            raise
        except StrataError as exc:
            end(state, call, target, started, exc)
            if not retryable(exc):
                raise
            last = exc
            if not await _backoff(delay, deadline):
                break
            delay *= 2
            continue
        return target, result
    raise last or attempts.unavailable()


async def _deployment_limits(state: AppState, call: CallRecord, target: Target, body: dict[str, Any]) -> None:
    admission = await state.governor.limits.admit_deployment(target.deployment.name, estimate_prompt_tokens(body))
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


def end(state: AppState, call: CallRecord, target: Target, started: float, exc: StrataError | None = None) -> None:
    """Close one attempt: in-flight count, breaker outcome, attempt metric and ledger entry."""
    target.runtime.outstanding -= 1
    name = target.deployment.name
    breaker = target.runtime.breaker
    if exc is None:
        breaker.success()
        outcome = "ok"
    else:
        outcome = exc.code or exc.type
        if retryable(exc):
            breaker.failure()
            state.rollouts.record(target.route.name, target.deployment.role, False)
        elif exc.status == 499:
            breaker.release()  # the client left: says nothing about the deployment's health
        else:
            breaker.success()  # the upstream answered (e.g. a 400 for a bad request): it is alive
    state.metrics.attempts.labels(name, outcome).inc()
    call.attempts.append({"deployment": name, "outcome": outcome, "status": 200 if exc is None else exc.status,
                          "ms": round((time.perf_counter() - started) * 1000, 2)})


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
