"""Admin API for drift detection (``strata.observe.drift``):

- ``GET /admin/drift``: the latest report of every watched route;
- ``GET /admin/drift/{route}``: the route's latest report, or a fresh one (``?fresh=true``, ``?deployment=D``: one
  deployment's (model version's) own drift, or a current window
  given by ``from``/``to``, ISO 8601);
- ``GET|POST|DELETE /admin/drift/{route}/baseline``: the registered reference window (POST snapshots
  ``from``..``to``, default: the last ``drift.window`` seconds).

Reports hold statistics only (no text, no team data); a baseline change is audited.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.routing import Route

from strata.errors import InvalidRequest, NotFound
from strata.gateway.admin import guarded
from strata.gateway.http import read_json
from strata.gateway.routes_admin import actor_of
from strata.gateway.schemas import validate
from strata.gateway.state import AppState

if TYPE_CHECKING:  # without importing numpy/scipy with the gateway
    from strata.observe.drift.monitor import DriftMonitor


class SetBaseline(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    start: datetime | None = Field(None, alias="from", description="Start of the window (default: to - drift.window)")
    end: datetime | None = Field(None, alias="to", description="End of the window (default: now)")


def _monitor(state: AppState) -> DriftMonitor:
    if state.observe.drift is None:
        raise NotFound("Drift detection is off: set drift.enabled.", code="drift_disabled")
    return state.observe.drift


def _route(state: AppState, request: Request) -> str:
    route = request.path_params["route"]
    if route not in state.routing.router.routes:
        raise NotFound(f"No route {route!r}.", code="route_not_found")
    return route


def _when(raw: str | None, name: str) -> datetime | None:
    if raw is None:
        return None
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be an ISO 8601 time, not {raw!r}.", param=name) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


async def list_reports(state: AppState, request: Request) -> dict[str, Any]:
    monitor = _monitor(state)
    return {"object": "list", "data": await asyncio.to_thread(monitor.store.reports)}


async def show_report(state: AppState, request: Request) -> dict[str, Any]:
    from strata.observe.drift.report import build_report

    monitor, route = _monitor(state), _route(state, request)
    q = request.query_params
    start, end = _when(q.get("from"), "from"), _when(q.get("to"), "to")
    deployment = q.get("deployment")
    if deployment is not None and deployment not in (
            {d.name for d in state.routing.router.routes[route].deployments}
            | await asyncio.to_thread(monitor.store.deployments, route)):  # a rolled-back version's too
        raise NotFound(f"Route {route!r} has no deployment {deployment!r}.", param="deployment",
                       code="deployment_not_found")
    if start is None and end is None and deployment is None and q.get("fresh") not in ("1", "true"):
        stored = await asyncio.to_thread(monitor.store.reports, route)
        if stored:
            return stored[0]
    return await asyncio.to_thread(build_report, monitor.cfg, monitor.store, route, monitor.clock(), start, end,
                                   deployment)


async def show_baseline(state: AppState, request: Request) -> dict[str, Any]:
    monitor, route = _monitor(state), _route(state, request)
    found = await asyncio.to_thread(monitor.store.baseline, route)
    if found is None:
        raise NotFound(f"Route {route!r} has no drift baseline (the reference is the previous "
                       f"{monitor.cfg.reference_days:g} days).", code="baseline_not_found")
    return await _with_count(monitor, found)


async def set_baseline(state: AppState, request: Request) -> dict[str, Any]:
    monitor, route = _monitor(state), _route(state, request)
    body: SetBaseline = validate(SetBaseline, await read_json(request, 64 * 1024))
    end = _aware(body.end) or monitor.clock()
    start = _aware(body.start) or end - timedelta(seconds=monitor.cfg.window)
    if start >= end:
        raise InvalidRequest("from must be before to.", param="from")
    await asyncio.to_thread(monitor.store.set_baseline, route, start, end, actor_of(request))
    await state.observe.audit.record(actor_of(request), "drift.baseline.set", route,
                                     {"from": start.isoformat(), "to": end.isoformat()})
    found = await asyncio.to_thread(monitor.store.baseline, route)
    assert found is not None
    return await _with_count(monitor, found)


async def clear_baseline(state: AppState, request: Request) -> dict[str, Any]:
    monitor, route = _monitor(state), _route(state, request)
    if not await asyncio.to_thread(monitor.store.clear_baseline, route):
        raise NotFound(f"Route {route!r} has no drift baseline.", code="baseline_not_found")
    await state.observe.audit.record(actor_of(request), "drift.baseline.clear", route, None)
    return {"route": route, "deleted": True}


async def _with_count(monitor: DriftMonitor, baseline: dict[str, Any]) -> dict[str, Any]:
    start, end = datetime.fromisoformat(baseline["from"]), datetime.fromisoformat(baseline["to"])
    n = await asyncio.to_thread(monitor.store.count, baseline["route"], start, end)
    return {"object": "drift.baseline", **baseline, "n": n}


def _aware(at: datetime | None) -> datetime | None:
    return None if at is None else at if at.tzinfo else at.replace(tzinfo=UTC)


routes = [
    Route("/admin/drift", guarded(list_reports), methods=["GET"]),
    Route("/admin/drift/{route}", guarded(show_report), methods=["GET"]),
    Route("/admin/drift/{route}/baseline", guarded(show_baseline), methods=["GET"]),
    Route("/admin/drift/{route}/baseline", guarded(set_baseline), methods=["POST"]),
    Route("/admin/drift/{route}/baseline", guarded(clear_baseline), methods=["DELETE"]),
]
