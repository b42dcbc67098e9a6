"""Admin API for SLOs: ``GET /admin/slo`` (``?route=NAME`` for one), the status ``strata slo status`` prints.

Route-wide numbers from every team's requests, like ``/metrics``: a team-scoped key is refused (scope
``global`` in ``gateway.authz``), so no team learns another's error counts."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from strata.errors import NotFound
from strata.gateway.admin import guarded
from strata.gateway.state import AppState
from strata.observe.slo import slo_status


async def show_slo(state: AppState, request: Request) -> dict[str, Any]:
    routes = list(state.routing.router.routes.values())
    name = request.query_params.get("route")
    if name is not None:
        routes = [r for r in routes if r.name == name]
        if not routes:
            raise NotFound(f"No route {name!r}.", code="route_not_found")
    data = await asyncio.to_thread(slo_status, state.db, routes)
    return {"object": "list", "data": data}


routes = [Route("/admin/slo", guarded(show_slo), methods=["GET"])]
