"""The shared-state operations, and the types they take and return.

Rate limits use GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp): a limit of
``n`` per window allows a burst of ``n`` and then one more every ``window / n``; a request of cost ``c``
moves the "theoretical arrival time" forward by ``c * window / n``. Exact, O(1), one value per counter.
Budgets keep integer nano-dollars: ``spent`` (settled) and ``reserved`` (admitted, not yet settled).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

NANO = 1_000_000_000  # budgets count nano-dollars, so sums are exact integers


@dataclass(frozen=True, slots=True)
class RateItem:
    key: str
    interval_ms: float  # window / limit
    burst_ms: float  # the window
    cost: float


@dataclass(slots=True)
class RateResult:
    allowed: bool
    failed: int = -1  # index of the first item that refused
    retry_after_ms: float = 0.0
    remaining: list[int] | None = None
    reset_ms: list[float] | None = None


@dataclass(frozen=True, slots=True)
class BudgetItem:
    key: str
    cap: int  # nano-dollars
    amount: int  # nano-dollars to reserve
    hold: str = ""  # this reservation's id (the request id): settling releases exactly it, once
    hold_ms: int = 900_000  # a hold never settled (its gateway died) is released after this long


@dataclass(slots=True)
class BudgetResult:
    allowed: bool
    failed: int = -1
    missing: list[int] | None = None  # items whose counters do not exist yet (seed them, then retry)
    spent: list[int] | None = None
    reserved: list[int] | None = None


class StateBackend(Protocol):
    async def rate(self, items: list[RateItem]) -> RateResult:
        """Consume every item's cost, or none of them when one would exceed its burst."""
        ...

    async def charge(self, items: list[RateItem]) -> None:
        """Consume unconditionally (settling what was not known at admission)."""
        ...

    async def reserve(self, items: list[BudgetItem], ttl_s: list[int]) -> BudgetResult:
        """Reserve every amount, or none when one budget's spent + reserved + amount exceeds its cap."""
        ...

    async def settle(self, items: list[BudgetItem], actual: list[int]) -> list[int]:
        """Release the items' holds (unless they expired already), add actual spend; returns spent after, per
        key. A hold whose request never settles (its gateway died) is released by the next ``reserve`` after
        ``hold_ms``, so a crash cannot shrink a budget for good.

        A counter that does not exist (lost with a Redis restart, or reserved on another backend before a
        failover) is left absent and reported as -1: created here it would start from this one request,
        and the next ``reserve`` would not seed it with the ledger's spend."""
        ...

    async def admit(self, rate: list[RateItem], budget: list[BudgetItem],
                    ttl_s: list[int]) -> tuple[RateResult, BudgetResult | None]:
        """``rate`` then ``reserve`` in one round trip; the reservation may be skipped when the rate refuses."""
        ...

    async def finish(self, charge: list[RateItem], items: list[BudgetItem], actual: list[int]) -> list[int]:
        """``charge`` then ``settle`` in one round trip."""
        ...

    async def seed(self, key: str, spent: int, ttl_s: int) -> None:
        """Create a budget counter with spend so far (from the ledger), or raise an existing one to it."""
        ...

    async def flag(self, key: str, ttl_s: int) -> bool:
        """Set a marker once: True for the caller that set it."""
        ...

    async def cache_get(self, key: str) -> bytes | None:
        """A shared cache entry (the exact response cache across replicas), or None."""
        ...

    async def cache_put(self, key: str, value: bytes, ttl_ms: int) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
