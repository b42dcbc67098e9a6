"""Observability as one service of the application state: metrics, the ledger, operator events, tracing and
the audit trail."""

from __future__ import annotations

from dataclasses import dataclass, field

from strata.observe.audit import AuditLog
from strata.observe.events import EventStore
from strata.observe.ledger import LedgerWriter
from strata.observe.metrics import Metrics
from strata.observe.tracing import Tracer, TracingSettings


@dataclass
class Observe:
    metrics: Metrics
    ledger: LedgerWriter
    events: EventStore
    audit: AuditLog  # the tamper-evident trail of admin changes: ``await state.observe.audit.record(…)``
    tracer: Tracer = field(default_factory=lambda: Tracer(TracingSettings(enabled=False), None))
