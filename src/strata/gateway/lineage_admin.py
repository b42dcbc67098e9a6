"""``GET /admin/lineage/{ref}``: lineage both ways from a request id or a dataset version (NAME@VERSION,
``?team=`` default the key's team), within the key's teams (``observe.lineage``)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from strata.errors import NotFound, PermissionDenied
from strata.gateway.admin import guarded, principal_of
from strata.gateway.state import AppState
from strata.observe.lineage import request_lineage, version_lineage


async def show_lineage(state: AppState, request: Request) -> dict[str, Any]:
    ref = request.path_params["ref"]
    principal = principal_of(request)
    teams = principal.scopes.teams
    if "@" not in ref:
        out: dict[str, Any] = await asyncio.to_thread(request_lineage, state.db, ref, teams)
        return out
    from strata.data.store import parse_ref

    team = request.query_params.get("team") or principal.team
    if not principal.scopes.team_ok(team):
        raise PermissionDenied(f"This key is scoped to teams {', '.join(sorted(teams or ()))}; not {team!r}.",
                               param="team", code="scope_denied")
    if state.data is None:
        raise NotFound("datasets are not enabled on this gateway", code="datasets_disabled")
    name, version = parse_ref(ref)
    v = await asyncio.to_thread(state.data.store.get_version, team, name, version, True)
    return await asyncio.to_thread(version_lineage, state.db, v)


routes = [Route("/admin/lineage/{ref}", guarded(show_lineage), methods=["GET"])]
