"""The gateway's own calls to a route (an embedding for the cache or the complexity score, a summary): through
the same attempt machinery as a client's request (breakers, ``max_in_flight``, retries, fallbacks, attempt
metrics), a span of the request's trace, and a ledger row of their own role under that request's id."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from strata.errors import InternalError, NotFound, StrataError
from strata.pipeline.account import account
from strata.pipeline.attempt import call_engine, end, timed
from strata.pipeline.record import CallRecord
from strata.pipeline.telemetry import internal_span

if TYPE_CHECKING:
    from strata.gateway.state import AppState
    from strata.routing.complexity import Embed
    from strata.routing.router import Target


async def internal(state: AppState, parent: CallRecord | None, route_name: str, role: str, endpoint: str,
                   body: dict[str, Any], make: Callable[[Target], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """A call a request needed (``parent``) has a ledger row of its own, with ``role`` and that request's id,
    key and tags; one for no request (a shadow's comparison, accounted in the shadow report) has none."""
    route = state.routing.router.routes.get(route_name)
    if route is None:
        raise NotFound(f"no route {route_name!r} for the gateway's {role} calls")
    rec = CallRecord(parent.request_id if parent is not None else state.new_id(), endpoint, route=route.name)
    span = None
    if parent is not None:
        rec.principal, rec.user, rec.tags = parent.principal, parent.user, parent.tags
        span = internal_span(parent, route.name, role, endpoint)
        rec.trace, rec.span = parent.trace, span
    target: Target | None = None
    try:
        target, (result, started) = await call_engine(state, rec, None, body, state.routing.router.attempts(route),
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
        if span is not None:
            span.set("gen_ai.usage.input_tokens", rec.prompt_tokens)
            span.set("gen_ai.usage.output_tokens", rec.completion_tokens)
            span.set("strata.cost_usd", rec.cost)
            span.set("strata.deployment", rec.deployment)
            span.end(rec.error_type if rec.status != 200 else None)


def embedder(state: AppState, route_name: str | None) -> Embed | None:
    """Embeddings through a route's deployments (e.g. the bundled MiniLM), for scoring and comparing.

    Each call goes through the route's attempts like a client's request (``internal``) and gets a ledger row
    of role ``embedding``, under the id of the request that needed it (``parent``).
    """
    if route_name is None:
        return None

    async def embed(texts: list[str], parent: CallRecord | None = None) -> list[list[float]]:
        body: dict[str, Any] = {"model": "", "input": texts}
        result = await internal(state, parent, route_name, "embedding", "embeddings", body,
                                lambda t: t.engine.embed(body))
        return [d["embedding"] for d in sorted(result["data"], key=lambda d: d["index"])]

    return embed
