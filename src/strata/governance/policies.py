"""Rate limits and budgets: the config file's, plus those set at run time (stored, audited, synced).

A run-time rule is identified by (kind, scope, subject[, period]); setting it again replaces it. Every
replica re-reads the table every ``keys.sync_interval``, so a change made through one reaches all.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from strata.errors import NotFound
from strata.governance.config import BudgetRule, LimitRule
from strata.observe.audit import AuditLog
from strata.store.tables import Policy, PolicyChange

MODELS: dict[str, type[LimitRule] | type[BudgetRule]] = {"limit": LimitRule, "budget": BudgetRule}


class PolicyStore:
    def __init__(self, engine: Engine, limits: list[LimitRule], budgets: list[BudgetRule],
                 audit: AuditLog | None = None) -> None:
        self.engine = engine
        self.audit = audit  # each change is also appended to the audit log, in the same transaction
        self.config_limits = limits
        self.config_budgets = budgets
        self.limits: list[LimitRule] = list(limits)
        self.budgets: list[BudgetRule] = list(budgets)

    def load(self) -> None:
        with Session(self.engine) as s:
            rows = list(s.scalars(select(Policy).order_by(Policy.id)))
        self.limits = [*self.config_limits, *(LimitRule.model_validate(r.spec) for r in rows if r.kind == "limit")]
        self.budgets = [*self.config_budgets,
                        *(BudgetRule.model_validate(r.spec) for r in rows if r.kind == "budget")]

    def view(self, kind: str) -> list[dict[str, Any]]:
        with Session(self.engine) as s:
            rows = list(s.scalars(select(Policy).where(Policy.kind == kind).order_by(Policy.id)))
        config = self.config_limits if kind == "limit" else self.config_budgets
        return ([{**r.model_dump(mode="json"), "source": "config"} for r in config]
                + [{**r.spec, "source": "runtime", "updated_at": _iso(r.updated_at), "updated_by": r.updated_by}
                   for r in rows])

    def set(self, kind: str, rule: LimitRule | BudgetRule, actor: str) -> dict[str, Any]:
        period = getattr(rule, "period", "")
        spec = rule.model_dump(mode="json")
        now = datetime.now(UTC)
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            row = s.scalars(select(Policy).where(Policy.kind == kind, Policy.scope == rule.scope,
                                                 Policy.subject == rule.subject, Policy.period == period)).first()
            before = row.spec if row else None
            if row is None:
                row = Policy(kind=kind, scope=rule.scope, subject=rule.subject, period=period)
                s.add(row)
            row.spec, row.updated_at, row.updated_by = spec, now, actor
            s.add(PolicyChange(at=now, actor=actor, kind=kind, action="set", before=before, after=spec))
            self._audit(s, actor, f"{kind}.set", _subject(kind, rule.scope, rule.subject, period), before, spec)
        self.load()
        return {**spec, "source": "runtime", "updated_at": now.isoformat(), "updated_by": actor}

    def remove(self, kind: str, scope: str, subject: str, period: str, actor: str) -> None:
        with Session(self.engine) as s, s.begin():
            row = s.scalars(select(Policy).where(Policy.kind == kind, Policy.scope == scope,
                                                 Policy.subject == subject, Policy.period == period)).first()
            if row is None:
                what = f"{kind} for {scope} {subject!r}" + (f" ({period})" if period else "")
                raise NotFound(f"no run-time {what}", param="subject", code=f"{kind}_not_found")
            s.add(PolicyChange(at=datetime.now(UTC), actor=actor, kind=kind, action="remove", before=row.spec,
                               after=None))
            self._audit(s, actor, f"{kind}.remove", _subject(kind, scope, subject, period), row.spec, None)
            s.delete(row)
        self.load()

    def _audit(self, s: Session, actor: str, action: str, subject: str, before: Any, after: Any) -> None:
        if self.audit is not None:
            self.audit.append(actor, action, subject, {"before": before, "after": after}, session=s)

    def changes(self, kind: str, limit: int = 100) -> list[dict[str, Any]]:
        q = select(PolicyChange).where(PolicyChange.kind == kind).order_by(PolicyChange.id.desc()).limit(limit)
        with Session(self.engine) as s:
            return [{"id": c.id, "at": _iso(c.at), "actor": c.actor, "action": c.action, "before": c.before,
                     "after": c.after} for c in s.scalars(q)]


def _subject(kind: str, scope: str, subject: str, period: str) -> str:
    return f"{kind}:{scope}:{subject}" + (f":{period}" if period else "")


def _iso(at: datetime) -> str:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()
