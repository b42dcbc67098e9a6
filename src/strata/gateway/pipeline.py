"""The request pipeline, top to bottom.

    authenticate -> read & validate -> route -> caller throttle -> limits, budget
        -> complexity score -> context fit -> (cache) -> call engine -> account

Cheap refusals come first: a request refused by a rate limit or a budget never pays for the stages that
call engines themselves (complexity scoring embeds the prompt, summarising calls an LLM). ``admit`` runs
every stage before the engine call, ``attempt.call_engine`` tries the route's deployments (retries,
fallbacks) until one answers, ``account`` runs every stage after it. ``internal`` is the same attempt
machinery for the gateway's own calls (embeddings, summaries), with a ledger row of its own role
(``summary``, ``embedding``) when a request needed it.
Each stage lives in its own module; this one only orders them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request

from strata.config.settings import RouteConfig
from strata.errors import InternalError, NotFound, RateLimited, StrataError
from strata.gateway.attempt import call_engine, end, timed
from strata.gateway.context import CallRecord, estimate_prompt_tokens
from strata.gateway.http import Disconnect, parse_tags, read_json
from strata.gateway.schemas import validate
from strata.gateway.state import AppState
from strata.gateway.window import budget, fit
from strata.governance.cost import request_cost
from strata.routing.router import Attempts, Target

log = logging.getLogger(__name__)


async def admit(state: AppState, request: Request, call: CallRecord, schema: type,
                prepare: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None,
                ) -> tuple[dict[str, Any], Any, Attempts]:
    """Stages before the engine: who is calling, what they ask, may they, which deployments may serve it.
    ``prepare`` turns another API's body into this endpoint's (the Responses API's into a chat body)."""
    call.principal = await state.auth.authenticate(request.headers.get("authorization"))
    body = await read_json(request, state.settings.server.max_body_bytes)
    call.watch = Disconnect(request.receive)  # from here on, a client that leaves cancels the request
    if prepare is not None:
        body = await prepare(body)
    req = validate(schema, body)
    call.user = req.user
    call.tags = parse_tags(request.headers.get("x-strata-tags"))
    call.stream = bool(getattr(req, "stream", False))
    route = state.router.resolve(req.model, call.principal, call.endpoint, body)
    call.route = route.name
    if (wait := state.callers.retry_after(route.name, call.principal.key_id)) > 0:
        state.metrics.limited.labels("key", "upstream_failures").inc()
        raise RateLimited(f"Requests from this key to '{route.name}' keep failing upstream while other callers' "
                          f"are served; retry in {wait:.0f}s.", code="caller_failing", retry_after=wait)
    fitting = route.context.policy != "off" and "messages" in body
    limit = prompt_budget(state, route, req) if fitting else None
    if state.governor.active:
        await govern(state, call, route, body, req, limit)
    if route.complexity is not None and (scorer := state.scorers.get(route.name)) is not None:
        score = await scorer.score(body, call)
        call.tier, call.route_score = score.tier, score.value
        state.metrics.route_tier.labels(route.name, score.tier).inc()
    attempts = state.router.attempts(route, request.headers.get("x-strata-affinity") or req.user, call.tier)
    if limit is not None:
        await manage_context(state, call, route, body, limit)
    state.metrics.in_flight.labels(call.route).inc()
    call.admitted = True
    return body, req, attempts


def prompt_budget(state: AppState, route: RouteConfig, req: Any) -> int | None:
    """The most prompt tokens the route's context policy lets through (see ``gateway.window``)."""

    def window(name: str) -> int | None:
        engine = state.engines.get(name)
        return engine.context_length if engine is not None else None

    return budget(route.context, route, window, getattr(req, "output_limit", None))


async def manage_context(state: AppState, call: CallRecord, route: RouteConfig, body: dict[str, Any],
                         limit: int) -> None:
    """Fit a long conversation into the route's prompt budget (see ``gateway.window``)."""
    cfg = route.context
    summarize = (lambda turns: summarize_turns(state, call, cfg.summarize_route or "", turns, cfg.summary_max_tokens)
                 ) if cfg.policy == "summarize" else None
    fitted = await fit(cfg, body["messages"], limit, summarize)
    if fitted is not None:
        body["messages"] = fitted.messages
        call.headers = {**(call.headers or {}), "x-strata-context": fitted.header()}


async def summarize_turns(state: AppState, call: CallRecord, route_name: str, turns: list[dict[str, Any]],
                          max_tokens: int) -> str:
    """A summary of dropped turns by the summarizer route; its call gets its own ledger row (role summary)."""
    transcript = "\n".join(f"{m.get('role')}: {m.get('content')}" for m in turns)
    body = {"model": "", "temperature": 0, "max_tokens": max_tokens,
            "messages": [{"role": "system", "content": "Summarize this conversation in a few sentences. Keep "
                          "names, numbers, decisions and open questions."},
                         {"role": "user", "content": transcript}]}
    result = await internal(state, call, route_name, "summary", "chat", body,
                            lambda t: t.engine.generate("chat", body))
    return str(result["choices"][0]["message"]["content"] or "").strip()


async def internal(state: AppState, parent: CallRecord | None, route_name: str, role: str, endpoint: str,
                   body: dict[str, Any], make: Callable[[Target], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """The gateway's own call to a route (embeddings, a summary), through the same attempts as a client's:
    breakers, ``max_in_flight``, retries, fallbacks, attempt metrics. A call a request needed (``parent``) has
    a ledger row of its own, with ``role`` and that request's id, key and tags; one for no request (a shadow's
    comparison, accounted in the shadow report) has none."""
    route = state.router.routes.get(route_name)
    if route is None:
        raise NotFound(f"no route {route_name!r} for the gateway's {role} calls")
    rec = CallRecord(parent.request_id if parent is not None else state.new_id(), endpoint, route=route.name)
    if parent is not None:
        rec.principal, rec.user, rec.tags = parent.principal, parent.user, parent.tags
    target: Target | None = None
    try:
        target, (result, started) = await call_engine(state, rec, None, body, state.router.attempts(route),
                                                      lambda t: timed(make(t)))
        end(state, rec, target, started)
        rec.take_usage(result.get("usage"))
        return result
    except StrataError as exc:
        rec.fail(exc)
        raise
    except asyncio.CancelledError:
        rec.status, rec.error_type = 499, "client_disconnected"
        raise
    except Exception:
        rec.fail(InternalError("internal call failed"))
        raise
    finally:
        rec.role = role
        if parent is not None:
            account(state, rec, target)


async def govern(state: AppState, call: CallRecord, route: RouteConfig, body: dict[str, Any], req: Any,
                 prompt_limit: int | None) -> None:
    """Rate limits and budgets (see ``governance.governor``); refusals are 429s naming the limit.

    Runs before the context is fitted, so the prompt is estimated as the most the context policy lets
    through (``prompt_limit``); the real usage settles the counters when the request ends.
    """
    assert call.principal is not None

    def context(name: str) -> int | None:
        engine = state.engines.get(name)
        return engine.context_length if engine is not None else None

    prompt = estimate_prompt_tokens(body)
    if prompt_limit is not None and prompt > prompt_limit:
        prompt = prompt_limit
    admission, reservation = await state.governor.admit(call.principal, route, call.tags, prompt,
                                                        getattr(req, "output_limit", None), context)
    call.governed = (admission, reservation)
    if admission is not None:
        call.headers = admission.headers


def account(state: AppState, call: CallRecord, target: Target | None) -> None:
    """Stages after the engine: cost, metrics, ledger. Runs exactly once per request, success or not."""
    finished = time.perf_counter()
    m = state.metrics
    team = call.principal.team if call.principal else "-"
    route, deployment = call.route or "-", call.deployment or "-"
    if target is not None:
        slots = getattr(target.deployment.engine, "n_parallel", 1)
        call.cost = request_cost(target.deployment.price, call.prompt_tokens, call.completion_tokens,
                                 finished - call.started, slots)
    if call.status == 200 and call.role is not None:
        state.rollouts.record(route, call.role, True, finished - call.started,
                              call.first_token - call.started if call.first_token is not None else None, call.cost)
    if call.admitted:
        m.in_flight.labels(route).dec()
        m.duration.labels(route, deployment).observe(finished - call.started)
        if call.prompt_tokens:
            m.input_tokens.labels(route, deployment, team).inc(call.prompt_tokens)
        if call.completion_tokens:
            m.output_tokens.labels(route, deployment, team).inc(call.completion_tokens)
        if call.cached_tokens:
            m.cached_tokens.labels(route, deployment, team).inc(call.cached_tokens)
        if call.cost:
            m.cost.labels(route, deployment, team).inc(call.cost)
    m.requests.labels(route, deployment, team, str(call.status)).inc()
    state.ledger.record(call.to_row(finished))
    if call.governed is not None:
        admission, reservation = call.governed
        pending = state.governor.settle_inline(admission, reservation, call.prompt_tokens, call.completion_tokens,
                                               call.cost)
        if pending is not None:  # shared counters (Redis) or an alert to send: in the background
            task = asyncio.create_task(pending)
            state.settling.add(task)
            task.add_done_callback(state.settling.discard)
