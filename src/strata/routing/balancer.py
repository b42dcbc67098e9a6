"""Choosing one deployment among several healthy ones of the same role.

- ``least-outstanding`` (default): power of two choices, weighted: draw two by weight, keep the one
  with fewer requests in flight per unit of weight. Near-optimal spreading with no global scan.
- ``weighted``: plain weighted random.
- affinity: rendezvous (highest-random-weight) hashing on the affinity key, so the same user lands on
  the same deployment while it stays healthy, and only that user's share moves when one leaves.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(slots=True)
class Candidate:
    name: str
    weight: float
    outstanding: int


def pick(cands: Sequence[Candidate], balancer: str, affinity_key: str | None, rng: random.Random) -> Candidate:
    if len(cands) == 1:
        return cands[0]
    if affinity_key:
        return max(cands, key=lambda c: _hrw_score(affinity_key, c))
    weights = [c.weight for c in cands]
    if balancer == "weighted":
        return rng.choices(cands, weights=weights)[0]
    i = rng.choices(range(len(cands)), weights=weights)[0]
    rest = [j for j in range(len(cands)) if j != i]
    j = rng.choices(rest, weights=[weights[k] for k in rest])[0]  # two distinct choices
    a, b = cands[i], cands[j]
    return a if a.outstanding / a.weight <= b.outstanding / b.weight else b


def unit_hash(key: str) -> float:
    """A stable pseudo-random number in [0, 1) for a key."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _hrw_score(key: str, cand: Candidate) -> float:
    unit = 1 - unit_hash(f"{key}\0{cand.name}")  # in (0, 1]
    return -cand.weight / math.log(unit) if unit < 1 else math.inf
