"""The canary's answer drift: do the canary's answers look like the primaries' over the same window?

Both arms see the same traffic mix, so prompt drift is not the question; their answers are. From the drift
samples of each arm (``observe.drift``, which embeds the sampled answers), three two-sample tests, Holm-corrected
at ``1 - canary.confidence``:

- answer embeddings: MMD² (RBF kernel, permutation test), flagged at ``canary.max_answer_drift`` and above;
- answer length (tokens): Kolmogorov-Smirnov D, flagged at ``canary.max_answer_length_shift`` and above;
- refusal rate: the canary's minus the primaries', flagged at ``canary.max_refusal_rate_increase`` and above.

A signal needs ``max(5, canary.min_requests // 3)`` samples on each side; the check is off unless
``canary.max_answer_drift`` is set, which needs drift sampling on for the route (``check_config``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from strata.errors import ConfigError

if TYPE_CHECKING:
    from strata.routing.analysis import Check
    from strata.routing.config import CanaryConfig, RouteConfig

MAX_EMBEDDINGS = 200  # per side in one MMD test (its cost is quadratic)


@dataclass(frozen=True, slots=True)
class Answer:
    """One sampled answer of one arm."""

    vector: list[float] | None
    tokens: int
    refusal: bool


def check(canary: Sequence[Answer], primary: Sequence[Answer], cfg: CanaryConfig) -> Check:
    from strata.routing.analysis import Check

    n = max(5, cfg.min_requests // 3)
    if cfg.max_answer_drift is None:
        return Check("answer_drift", None, None, False, False, "answer drift: off (canary.max_answer_drift)")
    if len(canary) < n or len(primary) < n:
        return Check("answer_drift", None, None, False, False,
                     f"answer drift: {len(canary)}/{len(primary)} sampled answers, too few")
    signals = _signals(canary, primary, cfg, n)
    from strata.observe.drift import stats

    decided = stats.decide(signals, 1 - cfg.confidence)
    flagged = [s for s in decided if s.detected]
    embedding = next((s.statistic for s in decided if s.name == "answer_embedding"), None)
    parts = ", ".join(f"{_LABELS[s.name]} {s.statistic:.3g} (limit {s.min_effect:g}, p {s.p_adjusted:.2g})"
                      for s in (flagged or decided))
    detail = (f"answer drift: {parts} ({len(canary)} vs {len(primary)} sampled answers)" if decided
              else "answer drift: no signal with enough samples")
    return Check("answer_drift", embedding, 0.0 if embedding is not None else None, bool(flagged), bool(decided),
                 detail)


_LABELS = {"answer_embedding": "answer embeddings MMD²", "answer_tokens": "answer length KS D",
           "refusal_rate": "refusal rate increase"}


def _signals(canary: Sequence[Answer], primary: Sequence[Answer], cfg: CanaryConfig, n: int) -> list[Any]:
    import numpy as np

    from strata.observe.drift import stats

    out = []
    cv = [a.vector for a in canary if a.vector is not None]
    pv = [a.vector for a in primary if a.vector is not None]
    if len(cv) >= n and len(pv) >= n and len(cv[0]) == len(pv[0]):
        alpha = 1 - cfg.confidence
        mmd, p = stats.mmd_test(np.asarray(pv), np.asarray(cv), permutations=max(500, math.ceil(2 * 3 / alpha)),
                                max_n=MAX_EMBEDDINGS, seed=len(cv) * 7919 + len(pv))
        out.append(stats.Signal("answer_embedding", "mmd_rbf_permutation", mmd, p, len(pv), len(cv),
                                cfg.max_answer_drift or 0.0))
    d, p = stats.ks_test([a.tokens for a in primary], [a.tokens for a in canary])
    out.append(stats.Signal("answer_tokens", "ks", d, p, len(primary), len(canary), cfg.max_answer_length_shift))
    rc, rp = _rate(a.refusal for a in canary), _rate(a.refusal for a in primary)
    diff, p = stats.rate_test(sum(a.refusal for a in primary), len(primary), sum(a.refusal for a in canary),
                              len(canary))
    out.append(stats.Signal("refusal_rate", "two_proportion", rc - rp if rc >= rp else 0.0, p, len(primary),
                            len(canary), cfg.max_refusal_rate_increase))
    return out


def _rate(flags: Iterable[bool]) -> float:
    values = list(flags)
    return sum(values) / len(values) if values else 0.0


def check_config(drift: Any, routes: Iterable[RouteConfig]) -> None:
    """A canary answer-drift limit needs the route's answers sampled and embedded: refuse it otherwise."""
    for route in routes:
        if route.canary.max_answer_drift is None and route.canary_settings().max_answer_drift is None:
            continue
        if not drift.enabled or drift.sample_rate <= 0 or (drift.routes is not None and route.name not in drift.routes):
            raise ConfigError(f"routes[{route.name}].canary.max_answer_drift needs drift sampling on for route "
                              f"{route.name!r} (drift.enabled, drift.sample_rate > 0, drift.routes)")
        if drift.embedding_route is None:
            raise ConfigError(f"routes[{route.name}].canary.max_answer_drift needs drift.embedding_route (answer "
                              "embeddings)")
