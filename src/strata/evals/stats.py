"""Paired comparison of two runs of one suite, case by case, with a significance test per metric.

Pass/fail metrics (every score 0 or 1) use McNemar's exact test: only the discordant cases count, and under
"no difference" each is equally likely to go either way (a binomial test with p = 1/2). Graded scores use the
Wilcoxon signed-rank test on the paired differences (no normality assumed; ties and zero differences are
handled by scipy). ``p_worse`` is the one-sided p-value of "the candidate scores lower"; a metric is
``worse`` when it is below ``1 - confidence``. Latency is compared the same way with lower being better.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class MetricComparison:
    metric: str
    n: int
    candidate_mean: float | None
    baseline_mean: float | None
    test: str
    p_value: float  # two-sided
    p_worse: float  # one-sided: the candidate is worse
    worse: bool
    better: bool
    worse_cases: list[str] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return asdict(self)


def _binary(values: list[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def paired_test(candidate: list[float], baseline: list[float]) -> tuple[str, float, float, float]:
    """(test, two-sided p, p that the candidate is lower, p that it is higher) for paired samples."""
    from scipy import stats

    if _binary(candidate) and _binary(baseline):
        wins = sum(1 for a, b in zip(candidate, baseline, strict=True) if a > b)
        losses = sum(1 for a, b in zip(candidate, baseline, strict=True) if a < b)
        n = wins + losses
        if n == 0:
            return "mcnemar-exact", 1.0, 1.0, 1.0
        return ("mcnemar-exact", float(stats.binomtest(losses, n, 0.5).pvalue),
                float(stats.binomtest(losses, n, 0.5, alternative="greater").pvalue),
                float(stats.binomtest(wins, n, 0.5, alternative="greater").pvalue))
    diffs = [a - b for a, b in zip(candidate, baseline, strict=True)]
    if all(d == 0 for d in diffs):
        return "wilcoxon", 1.0, 1.0, 1.0
    two = stats.wilcoxon(candidate, baseline, zero_method="zsplit").pvalue
    less = stats.wilcoxon(candidate, baseline, zero_method="zsplit", alternative="less").pvalue
    greater = stats.wilcoxon(candidate, baseline, zero_method="zsplit", alternative="greater").pvalue
    return "wilcoxon", float(two), float(less), float(greater)


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None


def compare_metric(metric: str, pairs: list[tuple[str, float, float]], confidence: float,
                   lower_is_better: bool = False) -> MetricComparison:
    """``pairs``: (case id, candidate score, baseline score) for the cases both runs scored."""
    cand = [c for _, c, _ in pairs]
    base = [b for _, _, b in pairs]
    if not pairs:
        return MetricComparison(metric, 0, None, None, "none", 1.0, 1.0, False, False)
    test, p, p_lower, p_higher = paired_test(cand, base)
    p_worse, p_better = (p_higher, p_lower) if lower_is_better else (p_lower, p_higher)
    alpha = 1 - confidence
    worse_cases = [cid for cid, c, b in pairs if (c > b if lower_is_better else c < b)]
    return MetricComparison(metric, len(pairs), _mean(cand), _mean(base), test, round(p, 6), round(p_worse, 6),
                            p_worse < alpha, p_better < alpha, worse_cases)


def compare_runs(candidate: list[dict[str, Any]], baseline: list[dict[str, Any]],
                 confidence: float = 0.95) -> list[MetricComparison]:
    """Every scorer metric, ``passed`` and ``latency_s``, over the cases both runs have (a case that failed
    scores 0 on every scorer)."""
    base = {r["case_id"]: r for r in baseline}
    both = [(r, base[r["case_id"]]) for r in candidate if r["case_id"] in base]
    metrics = sorted({m for r, _ in both for m in r["scores"]})
    out = []
    for metric in metrics:
        pairs = [(c["case_id"], float(c["scores"][metric]), float(b["scores"][metric])) for c, b in both
                 if c["scores"].get(metric) is not None and b["scores"].get(metric) is not None]
        out.append(compare_metric(metric, pairs, confidence))
    out.append(compare_metric("passed", [(c["case_id"], float(c["passed"]), float(b["passed"])) for c, b in both],
                              confidence))
    out.append(compare_metric("latency_s", [(c["case_id"], c["latency_s"], b["latency_s"]) for c, b in both],
                              confidence, lower_is_better=True))
    return out
