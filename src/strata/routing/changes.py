"""Run-time route changes: recorded (who, when, before/after) and replayed over the config at startup.

The newest change of a route wins over ``strata.yaml`` until ``reset``, which records ``after = null``
(back to the file). Every replica reading the same database starts from the same routes, and follows
changes made through any other replica within ``keys.sync_interval`` (``gateway.routes_admin.follow``).

A change never holds a secret in plain text: an upstream key in ``after`` is stored encrypted
(``governance.secrets``) and the change holds ``secret:NAME``; ``before`` holds ``***``. History shows both
as ``***``; replaying decrypts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from strata.governance.secrets import Path_, SecretStore, redact, seal, unseal
from strata.routing.config import RouteConfig
from strata.store.tables import RouteChange


class RouteChangeStore:
    def __init__(self, engine: Engine, secrets: SecretStore | None = None) -> None:
        self.engine = engine
        self.secrets = secrets  # None: read-only use (history); a secret to record is then only ``***``

    def record(self, route: str, action: str, actor: str, before: RouteConfig | None,
               after: RouteConfig | None, reason: str | None = None) -> dict[str, Any]:
        row = RouteChange(at=datetime.now(UTC), actor=actor, route=route, action=action, reason=reason,
                          before=seal(None, "", before, str) if before else None,
                          after=self._seal(after) if after else None)
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            s.add(row)
        return change_view(row)

    def _seal(self, cfg: RouteConfig) -> dict[str, Any]:
        def name(path: Path_) -> str:
            if len(path) > 2 and path[0] == "deployments" and isinstance(path[1], int):
                return f"{cfg.deployments[path[1]].name}/{'.'.join(map(str, path[2:]))}"
            return ".".join(map(str, path))

        return seal(self.secrets, f"routes/{cfg.name}", cfg, name)

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
        newest: dict[str, dict[str, Any] | None] = {}
        with Session(self.engine) as s:
            for row in s.scalars(select(RouteChange).order_by(RouteChange.id)):
                newest[row.route] = row.after
        return {route: RouteConfig.model_validate(self._unseal(after)) if after else None
                for route, after in newest.items()}

    def _unseal(self, after: dict[str, Any]) -> Any:
        return unseal(self.secrets, after) if self.secrets is not None else after


def change_view(row: RouteChange) -> dict[str, Any]:
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
    return {"id": row.id, "at": at.isoformat(), "actor": row.actor, "route": row.route, "action": row.action,
            "reason": row.reason, "before": redact(row.before), "after": redact(row.after)}


def apply_overrides(routes: list[RouteConfig], overrides: dict[str, RouteConfig | None]) -> list[RouteConfig]:
    by_name = {r.name: r for r in routes}
    for name, cfg in overrides.items():
        if cfg is not None:
            by_name[name] = cfg
    return list(by_name.values())
