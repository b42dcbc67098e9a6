"""Two-sample drift tests: pure functions on numpy arrays, no I/O.

Each test returns an effect size *and* a p-value (``Signal``); a signal is flagged only when its p-value,
corrected across the signals of one report (Holm), is below ``alpha`` **and** its effect is at least the
signal's minimum effect, so a huge sample does not flag a negligible shift (Evidently #50) and a small one does
not flag noise.

- embeddings: MMD² with an RBF kernel (bandwidth: the median pairwise distance of the pooled sample) and a
  permutation test; both samples are subsampled to ``max_n`` first (cost is quadratic);
- scalars (token counts): two-sample Kolmogorov-Smirnov, effect = the KS distance D;
- rates (refusal, tool calls): chi-squared on the 2x2 table (the two-proportion z-test), effect = the absolute
  difference of the rates;
- categories (language): chi-squared on the 2xK table, effect = Cramér's V.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray
from scipy import stats as sps

Array = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Signal:
    """One signal's test: ``statistic`` is the effect size (MMD², KS D, rate difference, Cramér's V)."""

    name: str
    test: str
    statistic: float
    p_value: float
    n_reference: int
    n_current: int
    min_effect: float
    p_adjusted: float = 1.0
    detected: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"signal": self.name, "test": self.test, "statistic": self.statistic, "p_value": self.p_value,
                "p_adjusted": self.p_adjusted, "min_effect": self.min_effect, "detected": self.detected,
                "n_reference": self.n_reference, "n_current": self.n_current}


def _subsample(x: Array, max_n: int, rng: np.random.Generator) -> Array:
    return x if len(x) <= max_n else x[rng.choice(len(x), max_n, replace=False)]


def rbf_kernel(z: Array) -> Array:
    """The RBF kernel matrix of ``z`` with the median heuristic: exp(-d² / (2 m)), m = median of the pairwise d²."""
    sq = np.einsum("ij,ij->i", z, z)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)
    off = d2[np.triu_indices(len(z), k=1)]
    median = float(np.median(off)) if off.size else 1.0
    return np.exp(-d2 / (2.0 * (median if median > 0 else 1.0)))


def mmd2_unbiased(k: Array, n: int) -> float:
    """Unbiased MMD² from the pooled kernel matrix, the first ``n`` rows being the reference."""
    m = len(k) - n
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    sxx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def mmd_test(reference: Array, current: Array, *, permutations: int = 500, max_n: int = 500,
             seed: int = 0) -> tuple[float, float]:
    """(MMD², permutation p-value). Each sample is cut to ``max_n`` rows at random; the p-value is
    (1 + #permuted statistics >= observed) / (1 + permutations), so it is never below 1/(permutations+1)."""
    rng = np.random.default_rng(seed)
    x = _subsample(np.asarray(reference), max_n, rng).astype(np.float64)
    y = _subsample(np.asarray(current), max_n, rng).astype(np.float64)
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        return 0.0, 1.0
    k = rbf_kernel(np.vstack([x, y]))
    observed = mmd2_unbiased(k, n)
    # Permutations on the biased statistic w'Kw (w = 1/n on one side, -1/m on the other): all at once.
    w = np.where(np.arange(n + m) < n, 1.0 / n, -1.0 / m)
    weights = np.stack([rng.permutation(w) for _ in range(permutations)])
    null = np.einsum("pi,pi->p", weights @ k, weights)
    stat = float(w @ k @ w)
    p = (1.0 + float(np.sum(null >= stat - 1e-12))) / (1.0 + permutations)
    return observed, p


def ks_test(reference: Sequence[float] | Array, current: Sequence[float] | Array) -> tuple[float, float]:
    """(KS distance D, p-value)."""
    x, y = np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)
    if len(x) == 0 or len(y) == 0:
        return 0.0, 1.0
    result = sps.ks_2samp(x, y)
    return float(result.statistic), float(result.pvalue)


def rate_test(ref_hits: int, ref_n: int, cur_hits: int, cur_n: int) -> tuple[float, float]:
    """(|rate difference|, p-value of the two-proportion test, i.e. chi-squared on the 2x2 table)."""
    if ref_n == 0 or cur_n == 0:
        return 0.0, 1.0
    diff = abs(cur_hits / cur_n - ref_hits / ref_n)
    table = np.array([[ref_hits, ref_n - ref_hits], [cur_hits, cur_n - cur_hits]], dtype=np.float64)
    if (table.sum(axis=0) == 0).any():  # a column empty on both sides: nothing to test
        return diff, 1.0
    return diff, float(sps.chi2_contingency(table, correction=False).pvalue)


def category_test(reference: Mapping[str, int], current: Mapping[str, int]) -> tuple[float, float]:
    """(Cramér's V, chi-squared p-value) of two count tables over the same categories."""
    keys = sorted(k for k in set(reference) | set(current) if reference.get(k, 0) + current.get(k, 0) > 0)
    table = np.array([[reference.get(k, 0) for k in keys], [current.get(k, 0) for k in keys]], dtype=np.float64)
    total = table.sum()
    if len(keys) < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    chi2 = sps.chi2_contingency(table, correction=False)
    return math.sqrt(float(chi2.statistic) / total), float(chi2.pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control, in the input order)."""
    k = len(p_values)
    order = sorted(range(k), key=lambda i: p_values[i])
    adjusted = [1.0] * k
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def decide(signals: Sequence[Signal], alpha: float) -> list[Signal]:
    """Correct the p-values across ``signals`` (Holm) and flag those below ``alpha`` with a large enough effect."""
    adjusted = holm([s.p_value for s in signals])
    return [replace(s, p_adjusted=p, detected=p <= alpha and s.statistic >= s.min_effect)
            for s, p in zip(signals, adjusted, strict=True)]
