"""Admin API for the audit log (``observe.audit``): read the newest entries, verify the chain."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from strata.errors import InvalidRequest
from strata.gateway.admin import guarded
from strata.gateway.state import AppState
from strata.observe.usage import window_start

MAX_LIMIT = 1000


async def list_audit(state: AppState, request: Request) -> dict[str, Any]:
    """Newest first; ``since`` (a window: 7d), ``action`` (e.g. key.create), ``limit`` (default 100)."""
    q = request.query_params
    since = window_start(q["since"]) if q.get("since") else None
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}", param="limit")
    data = await asyncio.to_thread(state.observe.audit.entries, since, q.get("action"), limit, True)
    return {"object": "list", "data": data}


async def verify_audit(state: AppState, request: Request) -> dict[str, Any]:
    """The whole chain, walked from its first entry: ``ok``, the head (seq, hash) and the first problem."""
    verdict = await asyncio.to_thread(state.observe.audit.verify)
    return verdict.view()


routes = [
    Route("/admin/audit", guarded(list_audit), methods=["GET"]),
    Route("/admin/audit/verify", guarded(verify_audit), methods=["GET"]),
]
