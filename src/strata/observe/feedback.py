"""Feedback on served requests: a score (user thumbs, an evaluator's grade) tied to the deployment that
answered, so rollouts can compare deployments on quality, not only on latency and errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, or_, select
from sqlalchemy.orm import Session

from strata.store.tables import Feedback, LedgerRow

AFTERWARDS = ("shadow", "judge")  # roles of calls made for a request after it was served


def find_request(engine: Engine, request_id: str) -> dict[str, Any] | None:
    """The served ledger row of a request id (key, team, route, deployment, role, trace), or None: not a row of
    a call made for it afterwards (its shadow's, its quality judge's)."""
    q = (select(LedgerRow.key_id, LedgerRow.team, LedgerRow.route, LedgerRow.deployment, LedgerRow.role,
                LedgerRow.status, LedgerRow.trace_id)
         .where(LedgerRow.request_id == request_id,
                or_(LedgerRow.role.is_(None), LedgerRow.role.notin_(AFTERWARDS)))
         .order_by(LedgerRow.id.desc()).limit(1))
    with engine.connect() as conn:
        row = conn.execute(q).first()
    return dict(row._mapping) if row else None


def record_feedback(engine: Engine, served: dict[str, Any], request_id: str, key_id: str, name: str, score: float,
                    comment: str | None) -> dict[str, Any]:
    """The score in ``feedback`` (what rollouts read) and in ``quality_scores`` as source ``feedback`` (what
    quality reports read), in one transaction."""
    from strata.observe.quality.store import feedback_row
    from strata.observe.quality.tables import QualityScore

    row = Feedback(at=datetime.now(UTC), request_id=request_id, key_id=key_id, route=served.get("route"),
                   deployment=served.get("deployment"), name=name, score=score, comment=comment)
    with Session(engine, expire_on_commit=False) as s, s.begin():
        s.add(row)
        s.add(QualityScore(**feedback_row(served, request_id, key_id, name, score, comment)))
    return {"id": row.id, "object": "feedback", "request_id": request_id, "route": row.route,
            "deployment": row.deployment, "name": name, "score": score, "comment": comment,
            "created_at": row.at.isoformat()}
