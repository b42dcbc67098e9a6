"""Run-time route changes: recorded (who, when, before/after) and replayed over the config at startup.

The newest change of a route wins over ``strata.yaml`` until ``reset``, which records ``after = null``
(back to the file). Every replica reading the same database starts from the same routes, and follows
changes made through any other replica within ``keys.sync_interval`` (``gateway.routes_admin.follow``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from strata.routing.config import RouteConfig
from strata.store.tables import RouteChange


class RouteChangeStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, route: str, action: str, actor: str, before: RouteConfig | None,
               after: RouteConfig | None, reason: str | None = None) -> dict[str, Any]:
        row = RouteChange(at=datetime.now(UTC), actor=actor, route=route, action=action, reason=reason,
                          before=before.model_dump(mode="json") if before else None,
                          after=after.model_dump(mode="json") if after else None)
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            s.add(row)
        return change_view(row)

    def history(self, route: str, limit: int = 50) -> list[dict[str, Any]]:
        q = select(RouteChange).where(RouteChange.route == route).order_by(RouteChange.id.desc()).limit(limit)
        with Session(self.engine) as s:
            return [change_view(r) for r in s.scalars(q)]

    def version(self) -> tuple[int, int]:
        """(count, newest id) of the changes: moves whenever any replica records one, even when ids commit out
        of order (PostgreSQL sequences)."""
        with Session(self.engine) as s:
            count, newest = s.execute(select(func.count(), func.max(RouteChange.id))).one()
        return int(count or 0), int(newest or 0)

    def overrides(self) -> dict[str, RouteConfig | None]:
        """The newest state of every changed route (None: back to the config file)."""
        out: dict[str, RouteConfig | None] = {}
        with Session(self.engine) as s:
            for row in s.scalars(select(RouteChange).order_by(RouteChange.id)):
                out[row.route] = RouteConfig.model_validate(row.after) if row.after else None
        return out


def change_view(row: RouteChange) -> dict[str, Any]:
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
    return {"id": row.id, "at": at.isoformat(), "actor": row.actor, "route": row.route, "action": row.action,
            "reason": row.reason, "before": row.before, "after": row.after}


def apply_overrides(routes: list[RouteConfig], overrides: dict[str, RouteConfig | None]) -> list[RouteConfig]:
    by_name = {r.name: r for r in routes}
    for name, cfg in overrides.items():
        if cfg is not None:
            by_name[name] = cfg
    return list(by_name.values())
