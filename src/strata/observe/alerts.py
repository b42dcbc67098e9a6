"""Forwarding operator events (``observe.events``: canary rollbacks, budget alerts, drift, throttled callers,
auth lockouts, cost anomalies) to where a person sees them: a webhook, or Alertmanager.

``EventStore.emit`` hands each event to ``AlertForwarder.offer``, which only appends it to a bounded queue
(from any thread; it never blocks and never fails the emitter). The ``alert-forward`` control loop
(``strata.app.loops``) runs ``step`` every ``alerts.group_interval``:

- each event gets a tier from ``alerts.tiers`` (``page``, ``ticket``, ``dashboard``);
- deduplication: another event of the same kind and subject within ``alerts.dedup_window`` of the last one
  sent is not sent again (counted ``deduplicated``);
- grouping: the events of one interval go in one POST; dashboard-tier events are not POSTed to a plain webhook
  (they are in ``/admin/events`` and the metrics), while Alertmanager gets them and routes them to its null
  receiver like the shipped rules' dashboard alerts;
- retries: a failed POST is tried again on later steps after ``retry_backoff``, doubling, up to
  ``max_retries`` times (then counted ``failed``); a step never sleeps.

``format: alertmanager`` POSTs to Alertmanager's ``/api/v2/alerts``: events then go through the same routing,
grouping, inhibition and receivers as the Prometheus rules (``deploy/prometheus/alertmanager.yml``), one place
to route everything. Every outcome is counted in ``strata_alerts_forwarded_total{tier,outcome}``.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from strata.config.references import STORED, resolve_reference
from strata.observe.config import AlertSettings
from strata.observe.metrics import Metrics

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)
ROUTE_KINDS = ("canary_", "drift")  # events whose subject is a route: labelled route= for Alertmanager's inhibition


@dataclass
class Batch:
    events: list[dict[str, Any]]
    due: float
    tries: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # events per tier, for the metric


class AlertForwarder:
    def __init__(self, cfg: AlertSettings, metrics: Metrics, headers: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.headers = headers or {}
        self.clock = clock
        self.queue: deque[dict[str, Any]] = deque()
        self.sent_at: dict[tuple[str, str], float] = {}  # (kind, subject) -> when last sent (dedup)
        self.batches: list[Batch] = []
        self.client: httpx.AsyncClient | None = None
        for tier in ("page", "ticket", "dashboard"):
            for outcome in ("sent", "failed", "deduplicated", "dropped"):
                metrics.alerts_forwarded.labels(tier, outcome)

    def offer(self, event: dict[str, Any]) -> None:
        """Take one event (any thread): queued, or counted ``dropped`` when the queue is full."""
        tier = self.cfg.tier_of(event["kind"])
        if len(self.queue) >= self.cfg.max_pending:
            self.metrics.alerts_forwarded.labels(tier, "dropped").inc()
            return
        self.queue.append({**event, "tier": tier})

    async def step(self) -> None:
        """One pass: deduplicate what came in, make it one batch, send every batch that is due."""
        now = self.clock()
        fresh = self._deduplicated(self._drain(), now)
        if self.cfg.format == "webhook":
            fresh = [e for e in fresh if e["tier"] != "dashboard"]
        if fresh:
            counts: dict[str, int] = {}
            for e in fresh:
                counts[e["tier"]] = counts.get(e["tier"], 0) + 1
            self.batches.append(Batch(fresh, now, counts=counts))
        for batch in [b for b in self.batches if b.due <= now]:
            await self._send(batch, now)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    def _drain(self) -> list[dict[str, Any]]:
        out = []
        while self.queue:
            out.append(self.queue.popleft())
        return out

    def _deduplicated(self, events: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
        window = self.cfg.dedup_window
        self.sent_at = {k: t for k, t in self.sent_at.items() if now - t < window}
        out = []
        for e in events:
            key = (e["kind"], e["subject"])
            if key in self.sent_at:
                self.metrics.alerts_forwarded.labels(e["tier"], "deduplicated").inc()
                continue
            self.sent_at[key] = now
            out.append(e)
        return out

    async def _send(self, batch: Batch, now: float) -> None:
        import httpx  # loaded when the first event goes out, not when Strata starts

        batch.tries += 1
        try:
            await self._post(batch.events)
        except (httpx.HTTPError, OSError) as exc:
            if batch.tries <= self.cfg.max_retries:
                batch.due = now + self.cfg.retry_backoff * 2 ** (batch.tries - 1)
                log.warning("alerts: POST of %d events failed (%s); try %d of %d in %.3gs", len(batch.events),
                            exc, batch.tries + 1, self.cfg.max_retries + 1, batch.due - now)
                return
            log.error("alerts: gave up on %d events after %d tries: %s", len(batch.events), batch.tries, exc)
            self._count(batch, "failed")
        else:
            self._count(batch, "sent")
        self.batches.remove(batch)

    def _count(self, batch: Batch, outcome: str) -> None:
        for tier, n in batch.counts.items():
            self.metrics.alerts_forwarded.labels(tier, outcome).inc(n)

    async def _post(self, events: list[dict[str, Any]]) -> None:
        if self.client is None:
            import httpx

            self.client = httpx.AsyncClient(timeout=self.cfg.timeout)
        url = self.cfg.webhook_url or ""
        if self.cfg.format == "alertmanager":
            body: Any = [alertmanager_alert(e, self.cfg.dedup_window) for e in events]
            url = url.rstrip("/") + "/api/v2/alerts"
        else:
            body = {"source": "strata", "alerts": [webhook_alert(e) for e in events]}
        response = await self.client.post(url, json=body, headers=self.headers)
        response.raise_for_status()


def webhook_alert(event: dict[str, Any]) -> dict[str, Any]:
    return {k: event.get(k) for k in ("id", "at", "kind", "subject", "tier", "message", "data")}


def alertmanager_alert(event: dict[str, Any], lasts: float) -> dict[str, Any]:
    """An event as an Alertmanager alert: ``alertname`` StrataEvent<Kind>, labels kind/subject/tier (and route),
    resolving by itself after the dedup window (or 5 minutes)."""
    at = datetime.fromisoformat(event["at"]) if event.get("at") else datetime.now(UTC)
    labels = {"alertname": "StrataEvent" + "".join(p.capitalize() for p in re.split(r"[_\W]+", event["kind"])),
              "kind": event["kind"], "subject": event["subject"], "tier": event["tier"], "source": "strata"}
    if event["kind"].startswith(ROUTE_KINDS):
        labels["route"] = event["subject"]
    ends = at + timedelta(seconds=lasts or 300)
    return {"labels": labels, "annotations": {"summary": event["message"]},
            "startsAt": at.isoformat(), "endsAt": ends.isoformat()}


def resolve_headers(cfg: AlertSettings, stored: Callable[[str], str]) -> dict[str, str]:
    """The POST headers with references resolved: env:NAME, file:/path, secret:NAME (``stored``)."""
    out = {}
    for name, value in cfg.headers.items():
        where = f"alerts.headers.{name}"
        out[name] = stored(value.removeprefix(STORED)) if value.startswith(STORED) else resolve_reference(value, where)
    return out
