"""Admin API for rate limits and budgets: list, set (add or replace), remove, audit trail.

Run-time rules are stored (and audited) in the database and picked up by every replica within
``keys.sync_interval``; rules from the config file are listed too (``source: config``) but change only
with the file.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from strata.errors import InvalidRequest
from strata.gateway.admin import guarded
from strata.gateway.http import read_json
from strata.gateway.routes_admin import actor_of
from strata.gateway.schemas import validate
from strata.gateway.state import AppState
from strata.governance.budgets import Budgets
from strata.governance.config import BudgetRule, LimitRule
from strata.state.base import NANO

KINDS = {"limits": "limit", "budgets": "budget"}


def _kind(request: Request) -> str:
    return KINDS[request.url.path.split("/")[2]]


async def list_policies(state: AppState, request: Request) -> dict[str, Any]:
    kind = _kind(request)
    data = await asyncio.to_thread(state.policies.view, kind)
    if kind == "budget":
        await asyncio.to_thread(_with_spend, state.governor.budgets, data)
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
    return await asyncio.to_thread(state.policies.set, kind, rule, actor_of(request))


async def remove_policy(state: AppState, request: Request) -> dict[str, Any]:
    kind = _kind(request)
    q = request.query_params
    scope, subject = q.get("scope"), q.get("subject")
    if not scope or not subject:
        raise InvalidRequest("name the rule to remove: ?scope=…&subject=…" + ("&period=…" if kind == "budget" else ""),
                             param="scope" if not scope else "subject")
    period = q.get("period", "month") if kind == "budget" else ""
    await asyncio.to_thread(state.policies.remove, kind, scope, subject, period, actor_of(request))
    return {"deleted": True, "kind": kind, "scope": scope, "subject": subject, "period": period or None}


async def policy_changes(state: AppState, request: Request) -> dict[str, Any]:
    return {"object": "list", "data": await asyncio.to_thread(state.policies.changes, _kind(request))}


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
