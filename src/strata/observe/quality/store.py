"""Reading and writing ``quality_scores``: the sampler's scores, ``/v1/feedback``'s scores, a request's scores
(joined with its ledger rows), and per route/deployment/scorer sums over a window for ``report``.

Feedback is written here as rows of source ``feedback`` (besides the ``feedback`` table the rollouts read),
so one table answers "how good were this request's answers" whoever scored them; its values keep their own
range (a thumbs up is 1, a 1-10 grade is 7), so the report keeps the two sources apart.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, case, func, insert, select

from strata.observe.quality.tables import QualityScore
from strata.store.tables import LedgerRow

SERVED = (None, "primary", "canary", "fallback", "cache")  # ledger roles of the row that answered the client
COLUMNS = ("at", "request_id", "trace_id", "route", "deployment", "team", "key_id", "scorer", "scorer_version",
           "value", "label", "rationale", "source")


def write(db: Engine, rows: list[dict[str, Any]]) -> None:
    if rows:
        with db.begin() as conn:
            conn.execute(insert(QualityScore), rows)


def feedback_row(served: dict[str, Any], request_id: str, key_id: str, name: str, score: float,
                 comment: str | None) -> dict[str, Any]:
    """A ``/v1/feedback`` score as a ``quality_scores`` row of source ``feedback``."""
    return {"at": datetime.now(UTC), "request_id": request_id, "trace_id": served.get("trace_id"),
            "route": served.get("route") or "-", "deployment": served.get("deployment"), "team": served.get("team"),
            "key_id": key_id, "scorer": name[:64], "scorer_version": None, "value": score, "label": None,
            "rationale": comment[:2000] if comment else None, "source": "feedback"}


def request_scores(db: Engine, request_id: str, teams: Collection[str] | None = None) -> dict[str, Any] | None:
    """A request's scores (oldest first) and its served ledger row; None when neither exists (or the request
    is another team's, for a team-scoped reader)."""
    with db.connect() as conn:
        scores = [dict(r._mapping) for r in conn.execute(
            select(*(getattr(QualityScore, c) for c in COLUMNS)).where(QualityScore.request_id == request_id)
            .order_by(QualityScore.id))]
        ledger = conn.execute(
            select(LedgerRow.route, LedgerRow.deployment, LedgerRow.role, LedgerRow.team, LedgerRow.status,
                   LedgerRow.latency_ms, LedgerRow.cost_usd, LedgerRow.trace_id)
            .where(LedgerRow.request_id == request_id).order_by(LedgerRow.id)).all()
    served = next((dict(r._mapping) for r in ledger if r.role in SERVED), None)
    team = served["team"] if served else next((s["team"] for s in scores), None)
    if (not scores and served is None) or (teams is not None and team not in teams):
        return None
    for s in scores:
        s["at"] = _iso(s["at"])
        s.pop("key_id", None)
    internal = [{"role": r.role, "route": r.route, "cost_usd": r.cost_usd} for r in ledger
                if r.role not in SERVED and r.role != "shadow"]
    return {"object": "quality.scores", "request_id": request_id, "served": served, "internal_calls": internal,
            "scores": scores}


def sums(db: Engine, since: datetime, route: str | None = None,
         teams: Collection[str] | None = None) -> list[dict[str, Any]]:
    """Per (route, deployment, scorer, source) since ``since``: n, sum, sum of squares, and how many values
    were neither 0 nor 1 (none: a pass/fail scorer, whose interval is Wilson's)."""
    q = QualityScore
    stmt = (select(q.route, q.deployment, q.scorer, q.source, func.count().label("n"),
                   func.sum(q.value).label("total"), func.sum(q.value * q.value).label("squares"),
                   func.sum(case((q.value.in_((0.0, 1.0)), 0), else_=1)).label("graded"))
            .where(q.at >= since).group_by(q.route, q.deployment, q.scorer, q.source))
    if route is not None:
        stmt = stmt.where(q.route == route)
    if teams is not None:
        stmt = stmt.where(q.team.in_(list(teams)))
    with db.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def _iso(at: datetime) -> str:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()
