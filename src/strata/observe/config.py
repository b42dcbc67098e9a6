"""Config models of the usage ledger, its crash journal and the audit log. (Tracing's lives in ``observe.tracing``.)"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from strata.config.base import Strict


class JournalSettings(Strict):
    """Each ledger row is appended to a local file before its response ends, replayed after a crash."""

    enabled: bool = True
    fsync_interval: float = Field(1.0, gt=0, description="Seconds between fsyncs of the journal (a process "
                                  "crash needs none; a machine crash can take this window)")
    segment_bytes: int = Field(4 * 1024 * 1024, ge=4096, description="Start a new journal file at this size; "
                               "files whose rows are all in the database are deleted")
    adopt_interval: float = Field(30.0, gt=0, description="Seconds between looks for journals of dead processes "
                                  "that shared the data dir (a start always replays them)")


class LedgerSettings(Strict):
    flush_interval: float = Field(0.25, gt=0, description="Seconds between batched ledger writes")
    batch_size: int = Field(1000, ge=1)
    journal: JournalSettings = JournalSettings()


class AuditSettings(Strict):
    """The hash-chained audit log (``observe.audit``)."""

    hmac_key: SecretStr | None = Field(None, description="Seal each audit entry with HMAC-SHA256 under this key "
                                       "(STRATA_AUDIT__HMAC_KEY), so a database writer without it cannot "
                                       "recompute the chain; the CLI needs it too to change keys")


class LatencySlo(Strict):
    """Share of requests answered within ``threshold_ms`` (end to end, as in the ledger's ``latency_ms``)."""

    threshold_ms: float = Field(gt=0, description="A request slower than this spends latency error budget; "
                                "also the p99 SLA of the StrataLatencyOverSLA page")
    objective: float = Field(0.99, gt=0, lt=1, description="Share of requests that must be this fast")


class SloSettings(Strict):
    """A route's service-level objectives (``observe.slo``): exported as ``strata_slo_objective{route,slo}``
    for the shipped burn-rate rules and reported by ``strata slo status`` from the ledger. An SLI counts every
    request of the route; availability's bad requests are the 5xx answers."""

    availability: float | None = Field(None, gt=0, lt=1, description="Share of requests that must not fail "
                                       "(5xx), e.g. 0.995")
    latency: LatencySlo | None = None
    window: str = Field("30d", pattern=r"^\d+[mhdw]$", description="The SLO period the error budget covers")


AlertTier = Literal["page", "ticket", "dashboard"]
DEFAULT_EVENT_TIERS: dict[str, AlertTier] = {
    "budget_exceeded": "page", "budget_alert": "ticket", "cost_anomaly": "ticket", "canary_rollback": "ticket",
    "drift_detected": "ticket", "auth_lockout": "ticket", "caller_throttled": "dashboard",
    "canary_promote": "dashboard", "canary_step": "dashboard",
}


class AlertSettings(Strict):
    """Forwarding Strata's operator events (``observe.events``) to a webhook or to Alertmanager (``observe.alerts``),
    deduplicated and grouped, in the background."""

    webhook_url: str | None = Field(None, description="Where events are POSTed (off when unset); with format "
                                    "alertmanager, Alertmanager's base URL (http://HOST:9093)")
    format: Literal["webhook", "alertmanager"] = Field("webhook", description="webhook: one JSON POST per group "
                                                       "of events; alertmanager: its /api/v2/alerts, so its "
                                                       "routing (alertmanager.yml) applies to events too")
    tiers: dict[str, AlertTier] = Field(default_factory=dict, description="Tier per event kind, over the "
                                        "defaults (budget_exceeded: page; canary steps, throttled callers: "
                                        "dashboard; others: ticket)")
    default_tier: AlertTier = Field("ticket", description="Tier of an event kind neither tiers nor the defaults "
                                    "name")
    group_interval: float = Field(10.0, gt=0, description="Seconds between POSTs: the events of one interval go "
                                  "together")
    dedup_window: float = Field(300.0, ge=0, description="Seconds in which another event of the same kind and "
                                "subject is not sent again")
    headers: dict[str, str] = Field(default_factory=dict, description="HTTP headers of each POST; a value may be "
                                    "env:NAME, file:/path or secret:NAME (strata secrets)")
    timeout: float = Field(5.0, gt=0, description="Seconds one POST may take")
    max_retries: int = Field(5, ge=0, description="Further tries of a failed POST, with doubling backoff")
    retry_backoff: float = Field(1.0, gt=0, description="Seconds before the first retry")
    max_pending: int = Field(1000, ge=1, description="Events waiting to be sent; beyond, new ones are dropped "
                             "(counted)")

    def tier_of(self, kind: str) -> AlertTier:
        return self.tiers.get(kind) or DEFAULT_EVENT_TIERS.get(kind) or self.default_tier
