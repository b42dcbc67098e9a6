"""Config model of shared state (where counters shared by replicas live)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from strata.config.base import Strict


class StateSettings(Strict):
    """Where counters shared by gateway replicas live: rate limits, budgets."""

    backend: Literal["memory", "redis"] = Field("memory", description="memory: this process only; redis: "
                                                "shared by every replica")
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field("strata", min_length=1)
    on_unavailable: Literal["fail-open", "fail-closed"] = Field(
        "fail-open", description="Redis unreachable: fail-open keeps serving with this replica's local counters; "
        "fail-closed answers 503")
    retry_interval: float = Field(1.0, gt=0, description="Seconds before trying an unreachable Redis again")
    timeout: float = Field(0.25, gt=0, description="Seconds a Redis call may take before it counts as down")
    reservation_ttl: float = Field(900.0, gt=0, description="Seconds a budget reservation may be held; one whose "
                                   "request never settles (a gateway killed mid-request) is released after this")
