"""A drift report: the signals of one route's current window tested against its reference window.

Reference: the route's registered baseline, or else the ``reference_days`` before the current window. The
current window is the last ``window`` seconds, never reaching back into a baseline (so the two never overlap).
A signal with fewer than ``min_samples`` observations on either side is listed under ``untested``.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from strata.observe.drift import stats
from strata.observe.drift.config import DriftSettings
from strata.observe.drift.stats import Signal
from strata.observe.drift.store import DriftStore, Window, unpack

EMBEDDINGS = ("prompt", "answer", "retrieved")
SIGNALS = 8  # 3 embeddings, 2 lengths, 2 rates, language
MAX_MMD2 = 2.0  # the largest MMD² an RBF kernel can give


def windows(cfg: DriftSettings, baseline: dict[str, Any] | None, now: datetime,
            current_from: datetime | None = None, current_to: datetime | None = None
            ) -> tuple[tuple[datetime, datetime, str], tuple[datetime, datetime]]:
    """((reference start, end, kind), (current start, end)) of a route at ``now``."""
    end = current_to or now
    start = current_from or end - timedelta(seconds=cfg.window)
    if baseline is not None:
        ref_start, ref_end = datetime.fromisoformat(baseline["from"]), datetime.fromisoformat(baseline["to"])
        return (ref_start, ref_end, "baseline"), (max(start, ref_end) if current_from is None else start, end)
    ref_end = start
    return (ref_end - timedelta(days=cfg.reference_days), ref_end, "previous"), (start, end)


def build_report(cfg: DriftSettings, store: DriftStore, route: str, now: datetime,
                 current_from: datetime | None = None, current_to: datetime | None = None,
                 deployment: str | None = None) -> dict[str, Any]:
    """Read both windows and test every signal (synchronous: run it in a thread). ``deployment``: only the
    observations that deployment (model version) answered, on both sides: its own drift over time."""
    (rs, re_, kind), (cs, ce) = windows(cfg, store.baseline(route), now, current_from, current_to)
    ref = store.window(route, rs, re_, cfg.max_rows, deployment)
    cur = store.window(route, cs, ce, cfg.max_rows, deployment)
    tested, untested = compare(cfg, ref, cur, seed=_seed(route, now))
    decided = stats.decide(tested, cfg.alpha) if tested else []
    detected = [s.name for s in decided if s.detected]
    status = "drift" if detected else ("ok" if decided else "insufficient_data")
    return {"object": "drift.report", "route": route, "deployment": deployment, "at": now.isoformat(),
            "status": status,
            "detected": detected, "alpha": cfg.alpha, "correction": "holm",
            "reference": {"kind": kind, **ref.span()}, "current": cur.span(),
            "signals": [s.as_dict() for s in decided], "untested": untested}


def _seed(route: str, now: datetime) -> int:
    """Reproducible permutations for one report (the same route and time give the same p-values)."""
    return int.from_bytes(hashlib.sha256(f"{route}|{now.isoformat()}".encode()).digest()[:4], "big")


def compare(cfg: DriftSettings, ref: Window, cur: Window, seed: int = 0) -> tuple[list[Signal], list[dict[str, Any]]]:
    """Every signal with enough observations on both sides, tested; the others listed with their counts."""
    tested: list[Signal] = []
    untested: list[dict[str, Any]] = []
    low = cfg.min_samples
    fx = cfg.min_effect

    def add(name: str, test: str, n_ref: int, n_cur: int, run: Any, min_effect: float) -> None:
        if n_ref < low or n_cur < low:
            untested.append({"signal": name, "n_reference": n_ref, "n_current": n_cur})
            return
        statistic, p = run()
        tested.append(Signal(name, test, statistic, p, n_ref, n_cur, min_effect))

    for name in EMBEDDINGS:
        a, b = ref.vectors[name], cur.vectors[name]
        add(f"{name}_embedding", "mmd_rbf_permutation", len(a), len(b),
            lambda a=a, b=b: _mmd(cfg, a, b, seed), fx.embedding)
    for name, x, y in (("prompt_tokens", ref.prompt_tokens, cur.prompt_tokens),
                       ("answer_tokens", ref.answer_tokens, cur.answer_tokens)):
        add(name, "ks", len(x), len(y), lambda x=x, y=y: stats.ks_test(x, y), fx.length)
    for name, f, g in (("refusal_rate", ref.refusals, cur.refusals),
                       ("tool_call_rate", ref.tool_calls, cur.tool_calls)):
        add(name, "two_proportion", len(f), len(g),
            lambda f=f, g=g: stats.rate_test(sum(f), len(f), sum(g), len(g)), fx.rate)
    add("language", "chi2", sum(ref.languages.values()), sum(cur.languages.values()),
        lambda: stats.category_test(ref.languages, cur.languages), fx.category)
    return tested, untested


def _mmd(cfg: DriftSettings, a: list[bytes], b: list[bytes], seed: int) -> tuple[float, float]:
    x, y = unpack(a), unpack(b)
    if x.shape[1] != y.shape[1]:  # the embedding model changed between the windows: not comparable
        return MAX_MMD2, 0.0
    rng = np.random.default_rng(seed)
    return stats.mmd_test(x, y, permutations=permutations(cfg), max_n=cfg.max_embeddings,
                          seed=int(rng.integers(2**31)))


def permutations(cfg: DriftSettings) -> int:
    """Enough permutations that the smallest permutation p-value, 1/(P+1), can pass the Holm correction over
    every signal at ``alpha`` (with 8 signals at alpha 0.01: at least 1,600)."""
    return max(cfg.permutations, math.ceil(2 * SIGNALS / cfg.alpha))
