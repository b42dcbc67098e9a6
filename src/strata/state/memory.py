"""The in-process backend: the embedded default, and the local fallback when Redis is away.

Each operation runs without awaiting anything, so on the event loop it is atomic.
"""

from __future__ import annotations

import time

from strata.state.base import BudgetItem, BudgetResult, RateItem, RateResult


class MemoryBackend:
    def __init__(self) -> None:
        self.tats: dict[str, float] = {}
        self.budgets: dict[str, list[int]] = {}  # key -> [spent, reserved]
        self.holds: dict[str, dict[str, tuple[float, int]]] = {}  # key -> hold -> (expires ms, amount)
        self.flags: dict[str, float] = {}

    @staticmethod
    def now_ms() -> float:
        return time.time() * 1000

    async def rate(self, items: list[RateItem]) -> RateResult:
        now = self.now_ms()
        new: list[float] = []
        for i, it in enumerate(items):
            tat = max(self.tats.get(it.key, now), now) + it.cost * it.interval_ms
            if tat - now > it.burst_ms:
                return RateResult(False, i, tat - now - it.burst_ms)
            new.append(tat)
        for it, tat in zip(items, new, strict=True):
            self.tats[it.key] = tat
        return RateResult(True, remaining=[int((it.burst_ms - (t - now)) // it.interval_ms) for it, t in
                                           zip(items, new, strict=True)], reset_ms=[t - now for t in new])

    async def charge(self, items: list[RateItem]) -> None:
        self.charge_now(items)

    def charge_now(self, items: list[RateItem]) -> None:
        now = self.now_ms()
        for it in items:
            self.tats[it.key] = max(self.tats.get(it.key, now), now) + it.cost * it.interval_ms

    async def reserve(self, items: list[BudgetItem], ttl_s: list[int]) -> BudgetResult:
        missing = [i for i, it in enumerate(items) if it.key not in self.budgets]
        if missing:
            return BudgetResult(False, missing=missing)
        now = self.now_ms()
        for it in items:
            self._expire(it.key, now)
        for i, it in enumerate(items):
            spent, reserved = self.budgets[it.key]
            if spent + reserved + it.amount > it.cap:
                return BudgetResult(False, i, spent=[spent], reserved=[reserved])
        for it in items:
            self.budgets[it.key][1] += it.amount
            self.holds.setdefault(it.key, {})[it.hold] = (now + it.hold_ms, it.amount)
        return BudgetResult(True, spent=[self.budgets[it.key][0] for it in items])

    def _expire(self, key: str, now: float) -> None:
        """Release holds whose request never settled (in time)."""
        holds = self.holds.get(key)
        if not holds:
            return
        for hold, (expires, amount) in list(holds.items()):
            if expires <= now:
                del holds[hold]
                self.budgets[key][1] = max(self.budgets[key][1] - amount, 0)

    async def settle(self, items: list[BudgetItem], actual: list[int]) -> list[int]:
        return self.settle_now(items, actual)

    def settle_now(self, items: list[BudgetItem], actual: list[int]) -> list[int]:
        out = []
        for it, act in zip(items, actual, strict=True):
            b = self.budgets.get(it.key)
            if b is None:
                out.append(-1)
                continue
            held = self.holds.get(it.key, {}).pop(it.hold, None)
            if held is not None:
                b[1] = max(b[1] - held[1], 0)
            b[0] += act
            out.append(b[0])
        return out

    async def admit(self, rate: list[RateItem], budget: list[BudgetItem],
                    ttl_s: list[int]) -> tuple[RateResult, BudgetResult | None]:
        result = await self.rate(rate)
        return result, (await self.reserve(budget, ttl_s) if result.allowed else None)

    async def finish(self, charge: list[RateItem], items: list[BudgetItem], actual: list[int]) -> list[int]:
        self.charge_now(charge)
        return self.settle_now(items, actual)

    async def seed(self, key: str, spent: int, ttl_s: int) -> None:
        b = self.budgets.setdefault(key, [spent, 0])
        b[0] = max(b[0], spent)

    async def flag(self, key: str, ttl_s: int) -> bool:
        now = time.time()
        if self.flags.get(key, 0) > now:
            return False
        self.flags[key] = now + ttl_s
        return True

    async def cache_get(self, key: str) -> bytes | None:
        return None  # the gateway's own cache is the in-process one

    async def cache_put(self, key: str, value: bytes, ttl_ms: int) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
