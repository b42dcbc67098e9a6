"""Operator events: things that happened that someone should know about (a canary rolled back or
promoted, a rollout stepped up). Stored in the ``events`` table, counted in a metric, and logged."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from strata.observe.metrics import Metrics
from strata.store.tables import Event

log = logging.getLogger("strata.events")


class EventStore:
    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self.forward: Callable[[dict[str, Any]], None] | None = None  # observe.alerts: queues, never blocks

    def emit(self, kind: str, subject: str, message: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        row = Event(at=datetime.now(UTC), kind=kind, subject=subject, message=message, data=data)
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            s.add(row)
        self.metrics.events.labels(kind).inc()
        log.info("event %s %s: %s", kind, subject, message)
        view = event_view(row)
        if self.forward is not None:
            self.forward(view)
        return view

    def list(self, kind: str | None = None, subject: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        q = select(Event).order_by(Event.id.desc()).limit(limit)
        if kind:
            q = q.where(Event.kind == kind)
        if subject:
            q = q.where(Event.subject == subject)
        with Session(self.engine) as s:
            return [event_view(r) for r in s.scalars(q)]


def event_view(row: Event) -> dict[str, Any]:
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
    return {"id": row.id, "at": at.isoformat(), "kind": row.kind, "subject": row.subject, "message": row.message,
            "data": row.data}
