"""Admin API for traces: ``GET /admin/traces`` (recent traces of this process) and
``GET /admin/traces/{id}`` (one trace's span tree, by trace id or request id). A team-scoped key sees only
its teams' traces; another team's trace is "not found", like a missing one."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from strata.errors import InvalidRequest, NotFound
from strata.gateway.admin import guarded, principal_of
from strata.gateway.state import AppState
from strata.observe.trace_store import TraceStore, team_of


def _store(state: AppState) -> TraceStore:
    store = state.observe.tracer.store
    if store is None:
        raise NotFound("No trace store: tracing.enabled and tracing.store.enabled are needed.",
                       code="traces_disabled")
    assert isinstance(store, TraceStore)
    return store


def _int(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer, not {raw!r}.", param=name) from None


async def list_traces(state: AppState, request: Request) -> dict[str, Any]:
    limit = _int(request, "limit", 50) or 50
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit must be between 1 and 1000.", param="limit")
    rows = _store(state).list(route=request.query_params.get("route"), status=_int(request, "status", None),
                              limit=limit, teams=principal_of(request).scopes.teams)
    return {"object": "list", "data": rows}


async def show_trace(state: AppState, request: Request) -> dict[str, Any]:
    ident = request.path_params["trace_id"]
    found = _store(state).get(ident)
    if found is not None and not principal_of(request).scopes.team_ok(team_of(found["spans"])):
        found = None
    if found is None:
        cfg = state.settings.tracing.store
        where = "of this gateway process" if cfg.backend == "memory" else "in the database"
        raise NotFound(f"No trace {ident!r} (kept: the newest {cfg.max_traces} {where}).", code="trace_not_found")
    return found


routes = [
    Route("/admin/traces", guarded(list_traces), methods=["GET"]),
    Route("/admin/traces/{trace_id}", guarded(show_trace), methods=["GET"]),
]
