"""Observability as one service of the application state: metrics, the ledger, operator events, tracing and
the audit trail."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from strata.observe.alerts import AlertForwarder
from strata.observe.audit import AuditLog
from strata.observe.events import EventStore
from strata.observe.ledger import LedgerWriter
from strata.observe.metrics import Metrics
from strata.observe.metrics_export import MetricsExporter
from strata.observe.tracing import Tracer, TracingSettings

if TYPE_CHECKING:
    from strata.observe.drift.monitor import DriftMonitor
    from strata.observe.quality.sampler import QualitySampler


@dataclass
class Observe:
    metrics: Metrics
    ledger: LedgerWriter
    events: EventStore
    audit: AuditLog  # the tamper-evident trail of admin changes: ``await state.observe.audit.record(…)``
    tracer: Tracer = field(default_factory=lambda: Tracer(TracingSettings(enabled=False), None))
    alerts: AlertForwarder | None = None  # events forwarded to a webhook / Alertmanager (alerts.webhook_url)
    drift: DriftMonitor | None = None  # drift detection (``observe.drift``), when ``drift.enabled``
    metrics_exporter: MetricsExporter | None = None  # OTLP metrics (``observe.metrics_export``), when configured
    quality: QualitySampler | None = None  # online quality sampling (``observe.quality``)
