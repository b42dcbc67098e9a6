"""Config models of governance: key syncing, rate limits, spend caps, cost alerts, secrets and abuse limits."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from strata.config.base import Strict


class KeySettings(Strict):
    sync_interval: float = Field(1.0, gt=0, description="Seconds between key-table syncs (revocations by CLI)")


class LimitRule(Strict):
    """A rate limit. Every matching rule applies (the strictest decides); ``subject: "*"`` gives each key,
    team or route its own counter."""

    scope: Literal["key", "team", "route", "deployment"]
    subject: str = Field("*", min_length=1, description="Key id, team, route or deployment name; * for each one")
    rpm: int | None = Field(None, ge=1, description="Requests per minute")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute (prompt at admission, completion after)")

    @model_validator(mode="after")
    def _some_limit(self) -> LimitRule:
        if self.rpm is None and self.tpm is None:
            raise ValueError("a limit needs rpm, tpm or both")
        return self


class BudgetRule(Strict):
    """A spend cap. Requests reserve their maximum cost at admission; past the cap they get 429."""

    scope: Literal["key", "team", "tag"]
    subject: str = Field(min_length=1, description="Key id, team, or NAME=VALUE for a tag; * for each key/team")
    period: Literal["day", "month", "total"] = "month"
    cap_usd: float = Field(gt=0)
    alerts: list[float] = Field(default_factory=lambda: [0.5, 0.8, 1.0],
                                description="Shares of the cap that emit a budget_alert event, once per period")

    @model_validator(mode="after")
    def _tag_subject(self) -> BudgetRule:
        if self.scope == "tag" and ("=" not in self.subject or self.subject.startswith("=")):
            raise ValueError("a tag budget's subject is NAME=VALUE, e.g. feature=search")
        if any(not 0 < a <= 1 for a in self.alerts):
            raise ValueError("alerts are shares of the cap in (0, 1]")
        return self


class CostAlertSettings(Strict):
    """Week-over-week cost alerts: a ``cost_anomaly`` event when a group's spend moves more than this."""

    enabled: bool = False
    by: str = Field("team", description="team, key, route, deployment, model, user, endpoint or tag:NAME")
    threshold_pct: float = Field(50.0, gt=0, description="Change in % of last week's spend that alerts")
    min_usd: float = Field(1.0, ge=0, description="Ignore groups spending less than this a week")
    interval: float = Field(3600.0, gt=0, description="Seconds between checks")


class SecretsSettings(Strict):
    """Where the keys that encrypt stored secrets come from (``governance.secrets``): ``STRATA_SECRET_KEY``
    (comma-separated, newest first) when set, else this file."""

    key_file: Path | None = Field(None, description="Encryption key file, one Fernet key a line, newest first "
                                  "(default: <data_dir>/secret.key, created 0600 on first start)")


class AbuseSettings(Strict):
    """Limits on abuse that rate limits do not catch (``governance.abuse``): key guessing from one address."""

    auth_failures: int = Field(20, ge=1, description="Failed authentications from one IP within auth_window "
                               "that lock the IP out")
    auth_window: float = Field(60.0, gt=0, description="Seconds over which auth_failures are counted")
    auth_lockout: float = Field(300.0, gt=0, description="Seconds a locked-out IP gets 429 on every request, "
                                "even with a valid key")
    trusted_proxies: list[str] = Field(default_factory=list, description="Proxy IPs or CIDRs whose "
                                       "X-Forwarded-For is believed (default: none; the peer address counts)")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for entry in v:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR") from None
        return v
