"""Shadow deployments: mirror a share of live traffic, after the fact, and compare the answers.

The mirror starts once the served request is accounted for, as a background task bounded per route
(``shadow.max_concurrency``; beyond it the mirror is dropped and counted), so the client never waits for
the shadow and never sees its answer. The shadow's call gets its own ledger row (role ``shadow``,
costed like any request) and a ``shadow_results`` row holding both answers and how they compare:
latency, tokens, cost, exact match and an agreement score (cosine similarity of their embeddings).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine as DbEngine
from sqlalchemy import select
from sqlalchemy.orm import Session

from strata.engines.base import Kind
from strata.errors import StrataError
from strata.gateway.state import AppState
from strata.pipeline.account import account
from strata.pipeline.attempt import begin, end
from strata.pipeline.internal import embedder
from strata.pipeline.record import CallRecord
from strata.routing.analysis import quantile
from strata.routing.router import Deployment, Target
from strata.store.tables import ShadowResult

log = logging.getLogger(__name__)


def shadow_body(body: dict[str, Any]) -> dict[str, Any]:
    """The mirrored request: the client's body, answered in one piece."""
    out = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    return out


def answer_text(result: dict[str, Any]) -> str:
    choices = result.get("choices") or [{}]
    first = choices[0]
    if "message" in first:
        return str((first.get("message") or {}).get("content") or "")
    return str(first.get("text") or "")


def mirror(state: AppState, call: CallRecord, shadow: Deployment, kind: Kind, body: dict[str, Any]) -> None:
    """Start the mirror of a served request, unless the route's mirror capacity is in use."""
    route = state.routing.router.routes.get(call.route or "")
    if route is None:
        return
    running = state.tasks.shadow_running
    if running[route.name] >= route.shadow.max_concurrency:
        state.observe.metrics.shadow_requests.labels(route.name, shadow.cfg.name, "dropped").inc()
        return
    running[route.name] += 1
    task = asyncio.create_task(_run(state, call, shadow, kind, body), name=f"shadow-{call.request_id}")
    state.tasks.background.add(task)
    task.add_done_callback(state.tasks.background.discard)


async def _run(state: AppState, served: CallRecord, shadow: Deployment, kind: Kind, body: dict[str, Any]) -> None:
    route = state.routing.router.routes[served.route or ""]
    rec = CallRecord(served.request_id, served.endpoint, principal=served.principal, user=served.user,
                     tags=served.tags, route=route.name, deployment=shadow.cfg.name,
                     engine=shadow.engine.engine_type, model=shadow.engine.model, role="shadow")
    target = Target(route, shadow.cfg, shadow.engine, shadow)
    text: str | None = None
    try:
        started = begin(target)
        try:
            result = await shadow.engine.generate(kind, {**body, "model": shadow.engine.model})
        except StrataError as exc:
            end(state, rec, target, started, exc)
            rec.fail(exc)
        else:
            end(state, rec, target, started)
            rec.take_usage(result.get("usage"))
            text = answer_text(result)
        account(state, rec, target)
        outcome = "ok" if rec.status == 200 else "error"
        state.observe.metrics.shadow_requests.labels(route.name, shadow.cfg.name, outcome).inc()
        latency = (time.perf_counter() - rec.started) * 1000
        agreement = await _agreement(state, route.shadow.agreement_route, served.answer_text, text)
        await asyncio.to_thread(_store, state.db, served, rec, route.shadow.store_chars, text, latency, agreement)
    except Exception:  # a shadow must never take anything down with it
        log.exception("shadow request %s on %s failed", served.request_id, shadow.cfg.name)
    finally:
        state.tasks.shadow_running[route.name] -= 1


async def _agreement(state: AppState, route_name: str | None, a: str | None, b: str | None) -> float | None:
    """Cosine similarity of the two answers' embeddings (1.0 for identical text)."""
    if a is None or b is None or route_name is None:
        return None
    if a.strip() == b.strip():
        return 1.0
    embed = embedder(state, route_name)
    if embed is None:
        return None
    try:
        va, vb = await embed([a[:2000] or " ", b[:2000] or " "])
    except Exception as exc:
        log.warning("shadow agreement: embeddings route %s unavailable: %s", route_name, exc)
        return None
    dot = sum(x * y for x, y in zip(va, vb, strict=True))
    norm = math.sqrt(sum(x * x for x in va)) * math.sqrt(sum(y * y for y in vb))
    return round(dot / norm, 4) if norm else None


def _store(db: DbEngine, served: CallRecord, shadow: CallRecord, chars: int, text: str | None, shadow_ms: float,
           agreement: float | None) -> None:
    primary = served.answer_text
    row = ShadowResult(
        at=datetime.now(UTC), request_id=served.request_id, route=served.route or "",
        primary_deployment=served.deployment, shadow_deployment=shadow.deployment or "",
        primary_answer=primary[:chars] if primary is not None else None,
        shadow_answer=text[:chars] if text is not None else None,
        primary_ms=served.latency_ms, shadow_ms=shadow_ms,
        primary_tokens=served.completion_tokens, shadow_tokens=shadow.completion_tokens if text is not None else None,
        primary_cost=served.cost, shadow_cost=shadow.cost,
        shadow_error=shadow.error_type, exact_match=(primary.strip() == text.strip()) if primary is not None and
        text is not None else None, agreement=agreement)
    with Session(db) as s, s.begin():
        s.add(row)


def report(db: DbEngine, route: str, since: timedelta | None = None, limit: int = 10_000) -> dict[str, Any]:
    """Compare the served answers with the shadow's over the newest ``limit`` mirrored requests."""
    q = select(ShadowResult).where(ShadowResult.route == route).order_by(ShadowResult.id.desc()).limit(limit)
    if since is not None:
        q = q.where(ShadowResult.at >= datetime.now(UTC) - since)
    with Session(db) as s:
        rows = list(s.scalars(q))
    by_shadow: dict[str, list[ShadowResult]] = defaultdict(list)
    for r in rows:
        by_shadow[r.shadow_deployment].append(r)
    return {"route": route, "shadows": [_summary(name, rs) for name, rs in by_shadow.items()],
            "recent": [{"request_id": r.request_id, "primary": r.primary_answer, "shadow": r.shadow_answer,
                        "agreement": r.agreement, "shadow_error": r.shadow_error} for r in rows[:5]]}


def _summary(name: str, rows: list[ShadowResult]) -> dict[str, Any]:
    ok = [r for r in rows if r.shadow_error is None]

    def stats(values: list[float | int | None]) -> dict[str, float | None]:
        vs = [float(v) for v in values if v is not None]
        if not vs:
            return {"mean": None, "p50": None, "p95": None}
        return {"mean": round(sum(vs) / len(vs), 4), "p50": round(quantile(vs, 0.5), 4),
                "p95": round(quantile(vs, 0.95), 4)}

    agreements = [r.agreement for r in ok if r.agreement is not None]
    exact = [r.exact_match for r in ok if r.exact_match is not None]
    return {
        "shadow_deployment": name,
        "primary_deployments": sorted({r.primary_deployment or "-" for r in rows}),
        "requests": len(rows),
        "shadow_errors": len(rows) - len(ok),
        "latency_ms": {"primary": stats([r.primary_ms for r in ok]), "shadow": stats([r.shadow_ms for r in ok])},
        "completion_tokens": {"primary": stats([r.primary_tokens for r in ok]),
                              "shadow": stats([r.shadow_tokens for r in ok])},
        "cost_usd": {"primary": round(sum(r.primary_cost or 0 for r in rows), 8),
                     "shadow": round(sum(r.shadow_cost or 0 for r in rows), 8)},
        "agreement": stats(list(agreements)) | {"min": min(agreements) if agreements else None},
        "exact_match_rate": round(sum(exact) / len(exact), 4) if exact else None,
    }
