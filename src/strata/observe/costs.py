"""Cost reports: who spends what, how it moves week over week, and which few groups drive most of it.

Shared by ``strata cost report`` and ``GET /admin/cost``. Grouped in Python over the rows of the window
(portable across SQLite and PostgreSQL, tags included); fine for millions of rows a month, not billions.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from strata.errors import InvalidRequest
from strata.observe.usage import COLUMNS, in_window, parse_window
from strata.store.tables import LedgerRow

WEEK = timedelta(days=7)
DRIVER_SHARE = 0.8  # the top groups that together make this share of spend are the cost drivers
DIMENSIONS = ("team", "key", "route", "deployment", "model", "user", "endpoint")


def cost_report(engine: Engine, by: str = "team", since: str = "30d", now: datetime | None = None,
                teams: Collection[str] | None = None) -> dict[str, Any]:
    """``teams``: only these teams' spend (a team-scoped key's view); None: every team."""
    now = now or datetime.now(UTC)
    try:
        start = now - parse_window(since)
    except OverflowError:
        raise InvalidRequest(f"window {since!r} is too long", param="since") from None
    tag = by[4:] if by.startswith("tag:") and len(by) > 4 else None
    if tag is None and by not in DIMENSIONS:
        raise InvalidRequest(f"cannot group by {by!r}; use one of: {', '.join(DIMENSIONS)}, tag:NAME", param="by")
    column = LedgerRow.tags if tag else COLUMNS[by]
    earliest = min(start, now - 2 * WEEK)
    q = select(column, LedgerRow.started_at, LedgerRow.cost_usd, LedgerRow.saved_usd).where(
        in_window(earliest, teams))
    acc: dict[Any, dict[str, Any]] = defaultdict(lambda: {"requests": 0, "cost_usd": 0.0, "saved_usd": 0.0,
                                                          "this_week_usd": 0.0, "last_week_usd": 0.0})
    with engine.connect() as conn:
        for value, at, cost, saved in conn.execute(q):
            at = at if at.tzinfo else at.replace(tzinfo=UTC)
            group = (value or {}).get(tag) if tag else value
            g = acc[group]
            if at >= start:
                g["requests"] += 1
                g["cost_usd"] += cost or 0.0
                g["saved_usd"] += saved or 0.0
            if at >= now - WEEK:
                g["this_week_usd"] += cost or 0.0
            elif at >= now - 2 * WEEK:
                g["last_week_usd"] += cost or 0.0
    total = sum(g["cost_usd"] for g in acc.values())
    groups = []
    for value, g in acc.items():
        if not g["requests"] and not g["this_week_usd"] and not g["last_week_usd"]:
            continue
        g["share"] = g["cost_usd"] / total if total else 0.0
        g["wow_change_pct"] = wow(g["this_week_usd"], g["last_week_usd"])
        groups.append({"group": value, **g})
    groups.sort(key=lambda g: (-g["cost_usd"], str(g["group"])))
    running = 0.0
    drivers = 0
    for g in groups:
        g["driver"] = bool(total) and running < DRIVER_SHARE * total and g["cost_usd"] > 0
        running += g["cost_usd"]
        drivers += g["driver"]
    this_week = sum(g["this_week_usd"] for g in groups)
    last_week = sum(g["last_week_usd"] for g in groups)
    return {
        "by": by, "since": since, "from": start.isoformat(), "to": now.isoformat(), "groups": groups,
        "totals": {"requests": sum(g["requests"] for g in groups), "cost_usd": total,
                   "saved_usd": sum(g["saved_usd"] for g in groups), "this_week_usd": this_week,
                   "last_week_usd": last_week, "wow_change_pct": wow(this_week, last_week)},
        "drivers": {"groups": drivers, "of": len(groups), "share": DRIVER_SHARE},
    }


def wow(this_week: float, last_week: float) -> float | None:
    return round((this_week - last_week) / last_week * 100, 1) if last_week else None


def to_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    fields = ["group", "requests", "cost_usd", "share", "saved_usd", "this_week_usd", "last_week_usd",
              "wow_change_pct", "driver"]
    w = csv.DictWriter(out, fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for g in report["groups"]:
        w.writerow({**g, "group": "" if g["group"] is None else g["group"]})
    return out.getvalue()


def anomalies(report: dict[str, Any], threshold_pct: float, min_usd: float) -> list[dict[str, Any]]:
    """Groups whose spend moved more than ``threshold_pct`` week over week (and matter: ``min_usd``)."""
    return [g for g in report["groups"] if g["wow_change_pct"] is not None
            and abs(g["wow_change_pct"]) > threshold_pct and max(g["this_week_usd"], g["last_week_usd"]) >= min_usd]
