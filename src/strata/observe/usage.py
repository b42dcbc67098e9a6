"""Usage reports over the ledger: cost and tokens grouped by team, key, route, … or any tag.

Shared by ``strata usage`` and ``GET /admin/usage`` so both always agree.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, case, func, select

from strata.errors import InvalidRequest
from strata.store.tables import LedgerRow

COLUMNS = {
    "team": LedgerRow.team, "key": LedgerRow.key_id, "route": LedgerRow.route,
    "deployment": LedgerRow.deployment, "model": LedgerRow.model, "user": LedgerRow.user,
    "endpoint": LedgerRow.endpoint,
}
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_window(text: str) -> timedelta:
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text or "")
    if not m:
        raise InvalidRequest(f"invalid window {text!r}: use a number and a unit, e.g. 30m, 24h, 7d", param="since")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def _metrics() -> list[Any]:
    return [
        func.count().label("requests"),
        func.sum(case((LedgerRow.status >= 400, 1), else_=0)).label("errors"),
        func.coalesce(func.sum(LedgerRow.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(LedgerRow.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(LedgerRow.cost_usd), 0.0).label("cost_usd"),
    ]


def window_start(since: str) -> datetime:
    try:
        return datetime.now(UTC) - parse_window(since)
    except OverflowError:  # "1000000d" parses but reaches before year 1
        raise InvalidRequest(f"window {since!r} is too long", param="since") from None


def usage_report(engine: Engine, by: str = "team", since: str = "7d",
                 teams: Collection[str] | None = None) -> dict[str, Any]:
    """``teams``: only these teams' requests (a team-scoped key's view); None: every team."""
    start = window_start(since)
    if by.startswith("tag:") and len(by) > 4:
        groups = _by_tag(engine, by[4:], start, teams)
    elif by in COLUMNS:
        col = COLUMNS[by]
        q = select(col.label("group"), *_metrics()).where(in_window(start, teams)).group_by(col)
        with engine.connect() as conn:
            groups = [dict(r._mapping) for r in conn.execute(q)]
    else:
        allowed = ", ".join([*COLUMNS, "tag:NAME"])
        raise InvalidRequest(f"cannot group by {by!r}; use one of: {allowed}", param="by")
    for g in groups:
        g["errors"] = int(g["errors"] or 0)
        g["cost_usd"] = float(g["cost_usd"] or 0.0)
    groups.sort(key=lambda g: (-g["cost_usd"], -g["requests"], str(g["group"])))
    totals = {k: sum(g[k] for g in groups) for k in ("requests", "errors", "prompt_tokens", "completion_tokens",
                                                       "cost_usd")}
    return {"by": by, "since": since, "from": start.isoformat(), "groups": groups, "totals": totals}


def in_window(start: datetime, teams: Collection[str] | None = None) -> ColumnElement[bool]:
    """Ledger rows from ``start`` on, of ``teams`` only when given."""
    if teams is None:
        return LedgerRow.started_at >= start
    return and_(LedgerRow.started_at >= start, LedgerRow.team.in_(sorted(teams)))


def _by_tag(engine: Engine, tag: str, start: datetime, teams: Collection[str] | None) -> list[dict[str, Any]]:
    """Tags live in a JSON column; grouping in Python keeps it identical on SQLite and PostgreSQL."""
    q = select(LedgerRow.tags, LedgerRow.status, LedgerRow.prompt_tokens, LedgerRow.completion_tokens,
               LedgerRow.cost_usd).where(in_window(start, teams))
    acc: dict[Any, dict[str, Any]] = defaultdict(
        lambda: {"requests": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0})
    with engine.connect() as conn:
        for tags, status, pt, ct, cost in conn.execute(q):
            g = acc[(tags or {}).get(tag)]
            g["requests"] += 1
            g["errors"] += status >= 400
            g["prompt_tokens"] += pt
            g["completion_tokens"] += ct
            g["cost_usd"] += cost
    return [{"group": k, **v} for k, v in acc.items()]
