"""Quality per route and deployment over a window: mean, n and a confidence interval per scorer.

Pass/fail scorers (every value 0 or 1: refusal, empty, json, a 0-1 judge) get Wilson's score interval, which
stays honest at small n and near 0 or 1; graded ones (a 1-5 judge mapped to 0..1, feedback) get Student's t
interval. The sums come from the database (``store.sums``), so a report costs one grouped query.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from statistics import NormalDist
from typing import Any

from sqlalchemy import Engine

from strata.errors import InvalidRequest
from strata.observe.quality.store import sums

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
_WINDOW = re.compile(r"^(\d+)([mhd])$")


def parse_window(raw: str) -> timedelta:
    """``1h``, ``24h``, ``7d`` (or any ``N`` + ``m``/``h``/``d`` up to 90 days)."""
    m = _WINDOW.match(raw.strip())
    if m is None or int(m.group(1)) == 0:
        raise InvalidRequest(f"window must look like 1h, 24h or 7d, not {raw!r}", param="window")
    span = timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[m.group(2)]: int(m.group(1))})
    if span > timedelta(days=90):
        raise InvalidRequest("window may be at most 90d", param="window")
    return span


def report(db: Engine, window: str = "24h", route: str | None = None, teams: Collection[str] | None = None,
           confidence: float = 0.95, now: datetime | None = None) -> dict[str, Any]:
    span = parse_window(window)
    since = (now or datetime.now(UTC)) - span
    groups = [_summary(g, confidence) for g in sums(db, since, route, teams)]
    groups.sort(key=lambda g: (g["route"], g["deployment"] or "", g["source"], g["scorer"]))
    return {"object": "quality.report", "window": window, "since": since.isoformat(), "confidence": confidence,
            "data": groups}


def _summary(g: dict[str, Any], confidence: float) -> dict[str, Any]:
    n, total, squares = int(g["n"]), float(g["total"] or 0), float(g["squares"] or 0)
    mean = total / n
    binary = not g["graded"]
    low, high = wilson(mean, n, confidence) if binary else t_interval(mean, squares, n, confidence)
    return {"route": g["route"], "deployment": g["deployment"], "scorer": g["scorer"], "source": g["source"],
            "n": n, "mean": round(mean, 4), "ci_low": _round(low), "ci_high": _round(high),
            "interval": "wilson" if binary else "t"}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def wilson(p: float, n: int, confidence: float) -> tuple[float, float]:
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def t_interval(mean: float, squares: float, n: int, confidence: float) -> tuple[float | None, float | None]:
    if n < 2:
        return None, None
    var = max(0.0, (squares - n * mean * mean) / (n - 1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * math.sqrt(var / n)
    return mean - half, mean + half


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile: exact for 1 and 2 degrees of freedom, else the Cornish-Fisher expansion around
    the normal quantile (Abramowitz & Stegun 26.7.5; within 0.5 % from 3 degrees of freedom on)."""
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4
