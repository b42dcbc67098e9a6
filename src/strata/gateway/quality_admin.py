"""Admin API for online quality: ``GET /admin/quality`` (per route, deployment and scorer over a window: mean,
n, confidence interval) and ``GET /admin/quality/{request_id}`` (one request's scores with its ledger row).
A team-scoped key sees only its teams' scores; another team's request is "not found"."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from strata.errors import NotFound
from strata.gateway.admin import guarded, principal_of
from strata.gateway.state import AppState
from strata.observe.quality.report import report
from strata.observe.quality.store import request_scores


async def quality_report(state: AppState, request: Request) -> dict[str, Any]:
    q = request.query_params
    return await asyncio.to_thread(report, state.db, q.get("window", "24h"), q.get("route"),
                                   principal_of(request).scopes.teams, state.settings.quality.confidence)


async def quality_scores(state: AppState, request: Request) -> dict[str, Any]:
    rid = request.path_params["request_id"]
    found = await asyncio.to_thread(request_scores, state.db, rid, principal_of(request).scopes.teams)
    if found is None:
        raise NotFound(f"No request {rid!r} with quality scores or a ledger row.", param="request_id",
                       code="request_not_found")
    return found


routes = [
    Route("/admin/quality", guarded(quality_report), methods=["GET"]),
    Route("/admin/quality/{request_id}", guarded(quality_scores), methods=["GET"]),
]
