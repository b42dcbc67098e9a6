"""Embedding-distribution shift between two versions: squared maximum mean discrepancy with an RBF kernel
whose bandwidth is the median pairwise distance (the usual heuristic). 0 for the same distribution, up to 2."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from strata.data.records import Record


def vectors(records: Sequence[Record], column: str, sample: int) -> np.ndarray:
    rows = [r.data[column] for r in records if isinstance(r.data.get(column), list) and r.data[column]]
    if len(rows) > sample:
        rows = random.Random(0).sample(rows, sample)
    return np.asarray(rows, dtype=np.float64) if rows else np.zeros((0, 0))


def mmd2(a: np.ndarray, b: np.ndarray) -> float:
    both = np.vstack([a, b])
    sq = np.sum(both**2, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * both @ both.T, 0.0)
    median = float(np.median(d2[np.triu_indices(len(both), 1)])) if len(both) > 1 else 1.0
    k = np.exp(-d2 / (median or 1.0))
    n = len(a)
    kaa, kbb, kab = k[:n, :n], k[n:, n:], k[:n, n:]
    return float(kaa.mean() + kbb.mean() - 2 * kab.mean())
