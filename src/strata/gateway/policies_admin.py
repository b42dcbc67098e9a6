"""Admin API for rate limits and budgets: list, set (add or replace), remove, audit trail.

Run-time rules are stored (and audited) in the database and picked up by every replica within
``keys.sync_interval``; rules from the config file are listed too (``source: config``) but change only
with the file. A team-scoped key sees and changes only rules on its teams and on its teams' keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from strata.errors import InvalidRequest, PermissionDenied
from strata.gateway.admin import guarded, principal_of
from strata.gateway.http import read_json
from strata.gateway.routes_admin import actor_of
from strata.gateway.schemas import validate
from strata.gateway.state import AppState
from strata.governance.budgets import Budgets
from strata.governance.config import BudgetRule, LimitRule
from strata.governance.roles import Scopes
from strata.state.base import NANO

KINDS = {"limits": "limit", "budgets": "budget"}


def _kind(request: Request) -> str:
    return KINDS[request.url.path.split("/")[2]]


async def list_policies(state: AppState, request: Request) -> dict[str, Any]:
    kind = _kind(request)
    data = await asyncio.to_thread(state.governance.policies.view, kind)
    mine = await _visible(state, principal_of(request).scopes)
    data = [d for d in data if mine(d)]
    if kind == "budget":
        await asyncio.to_thread(_with_spend, state.governance.governor.budgets, data)
    return {"object": "list", "data": data}


def _with_spend(budgets: Budgets, data: list[dict[str, Any]]) -> None:
    """Spend so far this period (from the ledger) for budgets on one named key, team or tag value."""
    now = datetime.now(UTC)
    for d in data:
        if d["subject"] != "*":
            rule = BudgetRule.model_validate({k: d[k] for k in BudgetRule.model_fields})
            d["spent_usd"] = budgets._spent_from_ledger(rule, rule.subject, now) / NANO


async def set_policy(state: AppState, request: Request) -> dict[str, Any]:
    kind = _kind(request)
    body = await read_json(request, 16 * 1024)
    rule = validate(LimitRule if kind == "limit" else BudgetRule, body)
    await _may_change(state, request, rule.scope, rule.subject)
    return await asyncio.to_thread(state.governance.policies.set, kind, rule, actor_of(request))


async def remove_policy(state: AppState, request: Request) -> dict[str, Any]:
    kind = _kind(request)
    q = request.query_params
    scope, subject = q.get("scope"), q.get("subject")
    if not scope or not subject:
        raise InvalidRequest("name the rule to remove: ?scope=…&subject=…" + ("&period=…" if kind == "budget" else ""),
                             param="scope" if not scope else "subject")
    period = q.get("period", "month") if kind == "budget" else ""
    await _may_change(state, request, scope, subject)
    await asyncio.to_thread(state.governance.policies.remove, kind, scope, subject, period, actor_of(request))
    return {"deleted": True, "kind": kind, "scope": scope, "subject": subject, "period": period or None}


async def policy_changes(state: AppState, request: Request) -> dict[str, Any]:
    data = await asyncio.to_thread(state.governance.policies.changes, _kind(request))
    mine = await _visible(state, principal_of(request).scopes)
    return {"object": "list", "data": [c for c in data if any(mine(r) for r in (c["before"], c["after"]) if r)]}


async def _visible(state: AppState, scopes: Scopes) -> Callable[[dict[str, Any]], bool]:
    """Whether a rule (``{"scope", "subject", …}``) is on one of the key's teams or one of their keys."""
    if scopes.teams is None:
        return lambda rule: True
    keys = {p.key_id for _, p in await asyncio.to_thread(state.governance.keys.list) if scopes.team_ok(p.team)}
    return lambda rule: ((rule.get("scope") == "team" and rule.get("subject") in (scopes.teams or ()))
                         or (rule.get("scope") == "key" and rule.get("subject") in keys))


async def _may_change(state: AppState, request: Request, scope: str, subject: str) -> None:
    scopes = principal_of(request).scopes
    if not (await _visible(state, scopes))({"scope": scope, "subject": subject}):
        raise PermissionDenied(f"This key may change only rules on teams {', '.join(sorted(scopes.teams or ()))} "
                               f"or their keys; not {scope} {subject!r}.", code="scope_denied")


routes = [
    route
    for path in ("/admin/limits", "/admin/budgets")
    for route in (
        Route(path, guarded(list_policies), methods=["GET"]),
        Route(path, guarded(set_policy), methods=["PUT"]),
        Route(path, guarded(remove_policy), methods=["DELETE"]),
        Route(f"{path}/changes", guarded(policy_changes), methods=["GET"]),
    )
]
