"""Canary analysis: is the canary worse than the primaries, and are we sure?

Each deployment under analysis keeps a sliding window of outcomes (ok or failed, latency, time to first
token, cost) and of feedback scores. ``compare`` judges the canary metric by metric; a metric counts as
*worse* only when the difference is both larger than its threshold (practical significance) and
statistically significant at the configured one-sided confidence (so ten requests never decide):

- error rate: two-proportion z-test;
- p95 latency and p95 time to first token: ratio of p95s, plus a Mann-Whitney U test that canary values
  tend to be larger;
- cost per request, feedback score and online quality score (``observe.quality``): ratio/difference of
  means, plus Welch's t-test (normal tail);
- answer drift (``canary.max_answer_drift``): the canary's sampled answers against the primaries'
  (``routing.answer_drift``: embeddings MMD², length KS, refusal rate, Holm-corrected).

Everything takes ``now`` from the caller, so tests drive it with a fake clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from statistics import NormalDist, fmean, variance

from strata.routing import answer_drift
from strata.routing.answer_drift import Answer
from strata.routing.config import CanaryConfig

_NORMAL = NormalDist()


@dataclass(slots=True)
class Outcome:
    at: float
    ok: bool
    latency: float = 0.0
    ttft: float | None = None
    cost: float = 0.0


@dataclass(slots=True)
class Window:
    """Outcomes and feedback scores of one deployment, newest last."""

    outcomes: deque[Outcome] = field(default_factory=deque)
    scores: deque[tuple[float, float]] = field(default_factory=deque)
    quality: deque[tuple[float, float]] = field(default_factory=deque)  # online quality, mean per sample, 0..1
    answers: deque[tuple[float, Answer]] = field(default_factory=deque)  # drift samples of this arm's answers

    def prune(self, since: float) -> None:
        while self.outcomes and self.outcomes[0].at < since:
            self.outcomes.popleft()
        for scores in (self.scores, self.quality, self.answers):
            while scores and scores[0][0] < since:
                scores.popleft()

    def count_since(self, since: float) -> int:
        return sum(1 for o in self.outcomes if o.at >= since)


@dataclass(slots=True)
class Check:
    metric: str
    canary: float | None
    primary: float | None
    worse: bool
    decided: bool  # enough data on both sides to judge this metric
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"metric": self.metric, "canary": self.canary, "primary": self.primary, "worse": self.worse,
                "decided": self.decided, "detail": self.detail}


@dataclass(slots=True)
class Verdict:
    checks: list[Check]
    canary_requests: int
    primary_requests: int

    @property
    def worse(self) -> list[Check]:
        return [c for c in self.checks if c.worse]

    @property
    def reason(self) -> str:
        return "; ".join(c.detail for c in self.worse)

    def as_dict(self) -> dict[str, object]:
        return {"canary_requests": self.canary_requests, "primary_requests": self.primary_requests,
                "worse": bool(self.worse), "reason": self.reason or None,
                "checks": [c.as_dict() for c in self.checks]}


def compare(canary: Window, primary: Window, cfg: CanaryConfig) -> Verdict:
    z = _NORMAL.inv_cdf(cfg.confidence)
    c, p = list(canary.outcomes), list(primary.outcomes)
    checks = [_error_rate(c, p, cfg, z)]
    c_ok, p_ok = [o for o in c if o.ok], [o for o in p if o.ok]
    checks.append(_p95("latency", [o.latency for o in c_ok], [o.latency for o in p_ok], cfg.max_latency_ratio,
                       cfg.min_requests, z))
    checks.append(_p95("ttft", [o.ttft for o in c_ok if o.ttft is not None],
                       [o.ttft for o in p_ok if o.ttft is not None], cfg.max_ttft_ratio, cfg.min_requests, z))
    checks.append(_cost([o.cost for o in c_ok], [o.cost for o in p_ok], cfg, z))
    checks.append(_feedback([s for _, s in canary.scores], [s for _, s in primary.scores], cfg, z))
    checks.append(_quality([s for _, s in canary.quality], [s for _, s in primary.quality], cfg, z))
    if cfg.max_answer_drift is not None:  # off by default: listed only when configured
        checks.append(answer_drift.check([a for _, a in canary.answers], [a for _, a in primary.answers], cfg))
    return Verdict(checks, len(c), len(p))


def _error_rate(c: list[Outcome], p: list[Outcome], cfg: CanaryConfig, z: float) -> Check:
    nc, np_ = len(c), len(p)
    if nc < cfg.min_requests or np_ < cfg.min_requests:
        return Check("error_rate", None, None, False, False, f"error rate: {nc}/{np_} requests, too few")
    ec, ep = sum(not o.ok for o in c) / nc, sum(not o.ok for o in p) / np_
    pooled = (ec * nc + ep * np_) / (nc + np_)
    se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / nc + 1 / np_))
    significant = (ec - ep) / se > z
    worse = significant and ec - ep > cfg.max_error_rate_increase
    return Check("error_rate", ec, ep, worse, True,
                 f"error rate {ec:.1%} vs {ep:.1%} on primary ({nc} vs {np_} requests)")


def _p95(metric: str, c: list[float], p: list[float], max_ratio: float, min_n: int, z: float) -> Check:
    label = "p95 latency" if metric == "latency" else "p95 time to first token"
    if len(c) < min_n or len(p) < min_n:
        return Check(metric, None, None, False, False, f"{label}: {len(c)}/{len(p)} samples, too few")
    qc, qp = quantile(c, 0.95), quantile(p, 0.95)
    ratio = qc / qp if qp > 0 else math.inf if qc > 0 else 1.0
    worse = ratio > max_ratio and mann_whitney_z(c, p) > z
    return Check(metric, qc, qp, worse, True, f"{label} {qc * 1000:.0f} ms vs {qp * 1000:.0f} ms on primary "
                 f"({ratio:.2f}x, limit {max_ratio:g}x)")


def _cost(c: list[float], p: list[float], cfg: CanaryConfig, z: float) -> Check:
    if len(c) < cfg.min_requests or len(p) < cfg.min_requests:
        return Check("cost", None, None, False, False, f"cost per request: {len(c)}/{len(p)} samples, too few")
    mc, mp = fmean(c), fmean(p)
    ratio = mc / mp if mp > 0 else math.inf if mc > 0 else 1.0
    worse = ratio > cfg.max_cost_ratio and welch_z(c, p) > z
    return Check("cost", mc, mp, worse, True, f"cost per request ${mc:.6f} vs ${mp:.6f} on primary "
                 f"({ratio:.2f}x, limit {cfg.max_cost_ratio:g}x)")


def _feedback(c: list[float], p: list[float], cfg: CanaryConfig, z: float) -> Check:
    n = max(5, cfg.min_requests // 3)  # feedback is sparser than traffic
    if len(c) < n or len(p) < n:
        return Check("feedback", None, None, False, False, f"feedback: {len(c)}/{len(p)} scores, too few")
    mc, mp = fmean(c), fmean(p)
    worse = mp - mc > cfg.max_feedback_drop and welch_z(p, c) > z
    return Check("feedback", mc, mp, worse, True, f"feedback score {mc:.2f} vs {mp:.2f} on primary "
                 f"(drop limit {cfg.max_feedback_drop:g})")


def _quality(c: list[float], p: list[float], cfg: CanaryConfig, z: float) -> Check:
    n = max(5, cfg.min_requests // 3)  # sampled answers are a share of the traffic
    if len(c) < n or len(p) < n:
        return Check("quality", None, None, False, False, f"quality: {len(c)}/{len(p)} scored samples, too few")
    mc, mp = fmean(c), fmean(p)
    worse = mp - mc > cfg.max_quality_drop and welch_z(p, c) > z
    return Check("quality", mc, mp, worse, True, f"quality score {mc:.2f} vs {mp:.2f} on primary "
                 f"(drop limit {cfg.max_quality_drop:g}, {len(c)} vs {len(p)} samples)")


def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def mann_whitney_z(a: list[float], b: list[float]) -> float:
    """z statistic of the Mann-Whitney U test; large and positive when ``a`` tends to exceed ``b``."""
    merged = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks = [0.0] * len(merged)
    i = 0
    ties = 0.0
    while i < len(merged):
        j = i
        while j + 1 < len(merged) and merged[j + 1][0] == merged[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    na, nb = len(a), len(b)
    u = sum(r for r, (_, side) in zip(ranks, merged, strict=True) if side == 0) - na * (na + 1) / 2
    n = na + nb
    var = na * nb / 12 * ((n + 1) - ties / (n * (n - 1)))
    return (u - na * nb / 2) / math.sqrt(var) if var > 0 else 0.0


def welch_z(a: list[float], b: list[float]) -> float:
    """Welch's statistic for mean(a) > mean(b), read against the normal tail (samples are large)."""
    se = math.sqrt(variance(a) / len(a) + variance(b) / len(b))
    diff = fmean(a) - fmean(b)
    if se == 0:
        return math.inf if diff > 0 else 0.0
    return diff / se
