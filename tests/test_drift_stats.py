"""Drift statistics (``strata.observe.drift.stats``) on synthetic shifts of known size, seeded.

Stated detection sizes (power >= 0.8 at n=200 per side, alpha 0.05, 50 seeded trials):
- embeddings: a mean shift of 0.5 sigma in a 4-dimensional subspace of 384-d Gaussian vectors, then normalised
  to unit length (like sentence embeddings), tested with MMD (RBF, median heuristic, permutations);
- lengths: a location shift of d = 0.4 (in standard deviations of log token counts), tested with KS;
- refusal rate: 5% -> 15%; language mix: 70/20/10 -> 50/30/20.
No false alarms beyond the nominal rate (plus a binomial margin) on unshifted samples at n=20,000 per side (the
MMD test subsamples to 500 per side inside ``mmd_test``), and a negligible shift at n=20,000 is significant
but not flagged, because its effect is below the minimum effect.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from scipy.stats import binom

from strata.observe.drift.stats import Signal, category_test, decide, holm, ks_test, mmd_test, rate_test

ALPHA = 0.05
TRIALS = 50
DIM = 384


def unit_embeddings(rng: np.random.Generator, n: int, shift: float = 0.0, subspace: int = 4) -> np.ndarray:
    z = rng.standard_normal((n, DIM), dtype=np.float32)
    z[:, :subspace] += shift
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def log_lengths(rng: np.random.Generator, n: int, d: float = 0.0) -> np.ndarray:
    """Token counts whose logs are normal with sd 0.6: a shift of d standard deviations of the log."""
    return np.round(np.exp(rng.normal(3.0 + d * 0.6, 0.6, n)))


def max_false_alarms(trials: int, alpha: float = ALPHA) -> int:
    """The 99.9% binomial upper bound of false alarms when the true rate is alpha."""
    return int(binom.ppf(0.999, trials, alpha))


def test_mmd_detects_a_half_sigma_shift_in_a_4d_subspace_at_n200() -> None:
    hits, effects = 0, []
    for seed in range(TRIALS):
        rng = np.random.default_rng(seed)
        effect, p = mmd_test(unit_embeddings(rng, 200), unit_embeddings(rng, 200, shift=0.5), permutations=200,
                             seed=seed)
        hits += p <= ALPHA
        effects.append(effect)
    assert hits / TRIALS >= 0.8, f"power {hits / TRIALS:.2f}"
    assert np.mean(effects) > 0  # MMD² (unbiased: one sample may fall below 0)


def test_mmd_false_alarm_rate_at_n20000_unshifted() -> None:
    alarms = 0
    trials = 20  # each draws 2 x 20,000 384-d vectors: the cost is the drawing
    for seed in range(trials):
        rng = np.random.default_rng(1000 + seed)
        _, p = mmd_test(unit_embeddings(rng, 20_000), unit_embeddings(rng, 20_000), permutations=100,
                        max_n=500, seed=seed)
        alarms += p <= ALPHA
    assert alarms <= max_false_alarms(trials), f"{alarms} false alarms in {trials}"


def test_ks_detects_a_length_shift_of_d04_at_n200() -> None:
    hits = 0
    for seed in range(TRIALS):
        rng = np.random.default_rng(seed)
        d, p = ks_test(log_lengths(rng, 200), log_lengths(rng, 200, d=0.4))
        hits += p <= ALPHA
    assert hits / TRIALS >= 0.8, f"power {hits / TRIALS:.2f}"


def test_ks_and_chi2_false_alarm_rates_at_n20000_unshifted() -> None:
    trials = 100
    ks_alarms = rate_alarms = lang_alarms = 0
    for seed in range(trials):
        rng = np.random.default_rng(5000 + seed)
        ks_alarms += ks_test(log_lengths(rng, 20_000), log_lengths(rng, 20_000))[1] <= ALPHA
        a, b = rng.binomial(20_000, 0.05), rng.binomial(20_000, 0.05)
        rate_alarms += rate_test(a, 20_000, b, 20_000)[1] <= ALPHA
        langs = ["en", "de", "fr"]
        x = Counter(rng.choice(langs, 20_000, p=[0.7, 0.2, 0.1]).tolist())
        y = Counter(rng.choice(langs, 20_000, p=[0.7, 0.2, 0.1]).tolist())
        lang_alarms += category_test(x, y)[1] <= ALPHA
    bound = max_false_alarms(trials)
    assert (ks_alarms, rate_alarms, lang_alarms) <= (bound, bound, bound) and max(
        ks_alarms, rate_alarms, lang_alarms) <= bound, (ks_alarms, rate_alarms, lang_alarms, bound)


def test_rate_and_language_shifts_are_detected_at_n200() -> None:
    rate_hits = lang_hits = 0
    langs = ["en", "de", "fr"]
    for seed in range(TRIALS):
        rng = np.random.default_rng(seed)
        diff, p = rate_test(rng.binomial(200, 0.05), 200, rng.binomial(200, 0.15), 200)
        rate_hits += p <= ALPHA
        x = Counter(rng.choice(langs, 200, p=[0.7, 0.2, 0.1]).tolist())
        y = Counter(rng.choice(langs, 200, p=[0.5, 0.3, 0.2]).tolist())
        lang_hits += category_test(x, y)[1] <= ALPHA
    assert rate_hits / TRIALS >= 0.8 and lang_hits / TRIALS >= 0.8, (rate_hits, lang_hits)


def test_a_negligible_shift_at_n20000_is_significant_but_not_flagged() -> None:
    """Evidently #50: with 20,000 per side a 0.05-sd length shift has a tiny p-value; the minimum effect
    (KS distance 0.1) keeps it from being called drift, while a real shift (d=0.4) is."""
    rng = np.random.default_rng(7)
    small = ks_test(log_lengths(rng, 20_000), log_lengths(rng, 20_000, d=0.05))
    large = ks_test(log_lengths(rng, 20_000), log_lengths(rng, 20_000, d=0.4))
    signals = [Signal("small", "ks", *small, 20_000, 20_000, 0.1), Signal("large", "ks", *large, 20_000, 20_000, 0.1)]
    decided = decide(signals, alpha=0.01)
    assert small[1] < 0.01 and small[0] < 0.1
    assert [s.detected for s in decided] == [False, True]
    assert all(0 <= s.p_adjusted <= 1 for s in decided)


def test_holm_adjusts_in_step_down_order() -> None:
    assert holm([0.01, 0.04, 0.03, 0.5]) == [0.04, 0.09, 0.09, 0.5]
    assert holm([]) == []


def test_degenerate_inputs_are_not_drift() -> None:
    assert rate_test(0, 100, 0, 100) == (0.0, 1.0)  # no refusals on either side
    assert category_test({"en": 10}, {"en": 50}) == (0.0, 1.0)  # one language on both sides
    assert ks_test([], [1, 2, 3]) == (0.0, 1.0)
    rng = np.random.default_rng(0)
    assert mmd_test(unit_embeddings(rng, 1), unit_embeddings(rng, 50)) == (0.0, 1.0)
