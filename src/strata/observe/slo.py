"""Service-level objectives per route: the objectives as metrics, and their status from the ledger.

A route's ``slo:`` (``observe.config.SloSettings``) names an availability objective (the share of requests
that must not fail with a 5xx) and a latency objective (the share that must be answered within
``threshold_ms``). Both SLIs count every request of the route, as ``strata_requests_total`` does, so the numbers
here and Prometheus' burn-rate rules (``deploy/prometheus/strata-rules.yml``) agree.

- ``export_objectives`` sets ``strata_slo_objective{route,slo}`` and ``strata_slo_latency_threshold_seconds``,
  which the shipped rules read, so they need no edit per route;
- ``count_slow`` counts ``strata_slow_requests_total{route}`` (the latency SLI's bad events) once per request;
- ``slo_status`` (``strata slo status``, ``GET /admin/slo``) computes from the ledger, per objective: the SLI
  over the SLO window, the error budget left, and the burn rates over 1h, 6h and 3d (1 = the budget lasts
  exactly the window; 14.4 over 1h is the page threshold).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, case, func, select

from strata.observe.config import SloSettings
from strata.observe.metrics import Metrics
from strata.observe.usage import parse_window
from strata.routing.config import RouteConfig
from strata.store.tables import LedgerRow

BURN_WINDOWS = {"1h": timedelta(hours=1), "6h": timedelta(hours=6), "3d": timedelta(days=3)}


def export_objectives(metrics: Metrics, routes: Iterable[RouteConfig]) -> None:
    """The gauges of the routes' objectives, as configured now (a route that lost its SLO loses its series)."""
    metrics.slo_objective.clear()
    metrics.slo_latency_threshold.clear()
    for route in routes:
        slo = route.slo
        if slo is None:
            continue
        if slo.availability is not None:
            metrics.slo_objective.labels(route.name, "availability").set(slo.availability)
        if slo.latency is not None:
            metrics.slo_objective.labels(route.name, "latency").set(slo.latency.objective)
            metrics.slo_latency_threshold.labels(route.name).set(slo.latency.threshold_ms / 1000)
            metrics.slow_requests.labels(route.name)  # the series exists (at 0) from the start


def count_slow(metrics: Metrics, route: RouteConfig | None, seconds: float) -> None:
    """One request of ``route`` took ``seconds``: a bad event of its latency SLI when over the threshold."""
    if route is not None and route.slo is not None and route.slo.latency is not None \
            and seconds * 1000 > route.slo.latency.threshold_ms:
        metrics.slow_requests.labels(route.name).inc()


def slo_status(engine: Engine, routes: Iterable[RouteConfig], now: datetime | None = None) -> list[dict[str, Any]]:
    """Every route with an SLO: its objectives, SLIs, error budget left and burn rates, from the ledger."""
    now = now or datetime.now(UTC)
    return [route_status(engine, r.name, r.slo, now) for r in routes if r.slo is not None]


def route_status(engine: Engine, route: str, slo: SloSettings, now: datetime) -> dict[str, Any]:
    threshold = slo.latency.threshold_ms if slo.latency is not None else None
    window = parse_window(slo.window)
    counts = {name: _counts(engine, route, now - span, now, threshold)
              for name, span in {"slo": window, **BURN_WINDOWS}.items()}
    objectives = []
    if slo.availability is not None:
        objectives.append({"slo": "availability", "objective": slo.availability,
                           **_objective(counts, "errors", slo.availability)})
    if slo.latency is not None:
        objectives.append({"slo": "latency", "objective": slo.latency.objective,
                           "threshold_ms": slo.latency.threshold_ms,
                           **_objective(counts, "slow", slo.latency.objective)})
    return {"route": route, "window": slo.window, "from": (now - window).isoformat(), "to": now.isoformat(),
            "objectives": objectives}


def _objective(counts: dict[str, dict[str, int]], bad: str, objective: float) -> dict[str, Any]:
    """SLI, error budget and burn rates of one objective; None where a window has no request."""
    budget = 1 - objective
    whole = counts["slo"]
    bad_ratio = whole[bad] / whole["requests"] if whole["requests"] else None
    return {
        "requests": whole["requests"], "bad": whole[bad],
        "sli": None if bad_ratio is None else 1 - bad_ratio,
        "error_budget": budget,
        "budget_remaining": None if bad_ratio is None else 1 - bad_ratio / budget,
        "met": None if bad_ratio is None else bad_ratio <= budget,
        "burn_rates": {name: (c[bad] / c["requests"] / budget if c["requests"] else None)
                       for name, c in counts.items() if name in BURN_WINDOWS},
    }


def _counts(engine: Engine, route: str, start: datetime, end: datetime, threshold_ms: float | None) -> dict[str, int]:
    slow = case((LedgerRow.latency_ms > threshold_ms, 1), else_=0) if threshold_ms is not None else None
    q = select(func.count(), func.sum(case((LedgerRow.status >= 500, 1), else_=0)),
               func.sum(slow) if slow is not None else func.sum(0)) \
        .where(LedgerRow.route == route, LedgerRow.started_at >= start, LedgerRow.started_at <= end)
    with engine.connect() as conn:
        requests, errors, slow_n = conn.execute(q).one()
    return {"requests": int(requests or 0), "errors": int(errors or 0), "slow": int(slow_n or 0)}
