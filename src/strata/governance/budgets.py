"""Budgets: spend caps per key, team and tag value, per day, month or in total, exact under concurrency.

At admission a request **reserves** its maximum cost (prompt estimate x input price + output limit x
output price, at the most expensive deployment of its route); past the cap it gets 429
``budget_exceeded``. When it ends, the reservation is released and the real cost added (a failed request
adds what it really cost, usually nothing). Reservations are checked and taken atomically across every
matching budget, so concurrent requests cannot all squeeze through the last dollar: the overspend is
bounded by the difference between an estimate and the real cost, never by the concurrency.

Counters start from the ledger's spend for the period the first time they are used (after a restart,
or when Redis lost them). Crossing an alert share (50/80/100% by default) emits one ``budget_alert``
event per budget and period, whichever replica crosses it.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine as DbEngine
from sqlalchemy import func, or_, select

from strata.errors import RateLimited
from strata.governance.config import BudgetRule
from strata.governance.keys import Principal
from strata.routing.config import RouteConfig
from strata.state.base import NANO, BudgetItem, BudgetResult
from strata.state.shared import SharedState
from strata.store.tables import LedgerRow

log = logging.getLogger(__name__)
TTL = {"day": 2 * 86400, "month": 32 * 86400, "total": 0}
DEFAULT_OUTPUT = 4096  # output tokens assumed when a request sets no max_tokens and the engine no window


@dataclass(slots=True)
class Prepared:
    rules: list[tuple[BudgetRule, str]]
    items: list[BudgetItem]
    ttls: list[int]
    now: datetime
    estimate: float


@dataclass(slots=True)
class Reservation:
    rules: list[tuple[BudgetRule, str]]
    items: list[BudgetItem]


def period_start(period: str, now: datetime) -> datetime | None:
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return None


def bucket(period: str, now: datetime) -> str:
    return now.strftime("%Y-%m-%d") if period == "day" else now.strftime("%Y-%m") if period == "month" else "total"


def max_cost(route: RouteConfig, prompt_tokens: int, output_limit: int | None,
             context: Callable[[str], int | None]) -> float:
    """The most a request can cost on its route: its output limit at the priciest serving deployment."""
    worst = 0.0
    for d in route.deployments:
        if d.role == "shadow":
            continue
        out = output_limit or context(d.name) or DEFAULT_OUTPUT
        cost = (prompt_tokens * d.price.input_per_mtok + out * d.price.output_per_mtok) / 1_000_000
        if d.price.busy_hour:
            cost += d.price.busy_hour / 3600 * (route.deadline or 120.0) / getattr(d.engine, "n_parallel", 1)
        worst = max(worst, cost)
    return worst


class Budgets:
    def __init__(self, state: SharedState, rules: Callable[[], list[BudgetRule]], db: DbEngine,
                 emit: Callable[[str, str, str, dict[str, Any]], Any],
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.state = state
        self.rules = rules
        self.db = db
        self.emit = emit
        self.now = now
        self._epoch = 0
        self._caught_up: set[str] = set()
        # reservation ids: unique across replicas (random prefix) and cheap (a counter)
        self._next_hold = functools.partial(next, map(f"h{os.urandom(6).hex()}-{{:x}}".format, itertools.count()))

    def matching(self, principal: Principal, tags: dict[str, str]) -> list[tuple[BudgetRule, str]]:
        out = []
        for rule in self.rules():
            if rule.scope == "tag":
                name, _, value = rule.subject.partition("=")
                if tags.get(name) == value:
                    out.append((rule, rule.subject))
                continue
            value = principal.key_id if rule.scope == "key" else principal.team
            if rule.subject in ("*", value):
                out.append((rule, value))
        return out

    def _key(self, rule: BudgetRule, value: str, now: datetime) -> str:
        return self.state.key("budget", rule.scope, value, rule.period, bucket(rule.period, now))

    def prepare(self, principal: Principal, tags: dict[str, str], estimate: float) -> Prepared | None:
        """The counters a request reserves on, or None when no budget applies to it."""
        rules = self.matching(principal, tags)
        if not rules:
            return None
        now = self.now()
        amount = math.ceil(estimate * NANO)
        hold, hold_ms = self._next_hold(), int(self.state.cfg.reservation_ttl * 1000)
        items = [BudgetItem(self._key(r, v, now), round(r.cap_usd * NANO), amount, hold, hold_ms) for r, v in rules]
        return Prepared(rules, items, [TTL[r.period] for r, _ in rules], now, estimate)

    async def catch_up(self, prepared: Prepared) -> None:
        """After a Redis outage (fail-open), spend served on local counters is only in the ledger: raise each
        shared counter to the ledger's spend, once per counter and outage."""
        if self._epoch != self.state.epoch:
            self._epoch, self._caught_up = self.state.epoch, set()
        if not self._epoch:
            return
        for (rule, value), item, ttl in zip(prepared.rules, prepared.items, prepared.ttls, strict=True):
            if item.key not in self._caught_up:
                await self._seed(rule, value, item.key, ttl, prepared.now)
                self._caught_up.add(item.key)

    async def reserve(self, principal: Principal, tags: dict[str, str], estimate: float) -> Reservation | None:
        prepared = self.prepare(principal, tags, estimate)
        if prepared is None:
            return None
        if self.state.remote is not None:
            await self.state.probe()
            await self.catch_up(prepared)
        result = await self.state.run(lambda b: b.reserve(prepared.items, prepared.ttls))
        return await self.conclude(prepared, result)

    async def conclude(self, prepared: Prepared, result: BudgetResult) -> Reservation:
        """Seed counters met for the first time (then reserve again); the reservation, or the 429."""
        rules, items, ttls, now, estimate = prepared.rules, prepared.items, prepared.ttls, prepared.now, \
            prepared.estimate
        for _ in range(3):
            if not result.missing:
                break
            for i in result.missing:
                await self._seed(*rules[i], items[i].key, ttls[i], now)
            result = await self.state.run(lambda b: b.reserve(items, ttls))
        if not result.allowed:
            rule, value = rules[result.failed]
            spent = (result.spent or [0])[0] / NANO
            held = (result.reserved or [0])[0] / NANO
            self.state.metrics.limited.labels(rule.scope, "budget").inc()
            what = f"{rule.scope} '{value}'" if rule.scope != "tag" else f"tag {value}"
            period = {"day": "today", "month": "this month", "total": "in total"}[rule.period]
            in_flight = f" (+ ${held:.4f} held by requests in flight)" if held else ""
            exhausted = spent + estimate > rule.cap_usd  # not only held by requests that may cost less
            if exhausted:
                await self._alert_once(rule, value, now, "budget_exceeded",
                                       f"budget of {what} refused a request: ${spent:.6f}{in_flight} of "
                                       f"${rule.cap_usd:g} spent {period}")
            raise RateLimited(f"Budget exceeded for {what}: ${spent:.4f}{in_flight} of ${rule.cap_usd:g} spent "
                              f"{period}, and this request may cost up to ${estimate:.4f}.", code="budget_exceeded",
                              retry_after=None if exhausted else 1)
        return Reservation(rules, items)

    async def _seed(self, rule: BudgetRule, value: str, key: str, ttl: int, now: datetime) -> None:
        """Start a counter from the ledger's spend this period (first use, restart, Redis lost it)."""
        spent = await asyncio.to_thread(self._spent_from_ledger, rule, value, now)
        await self.state.run(lambda b: b.seed(key, spent, ttl))

    async def settle(self, res: Reservation, actual: float) -> None:
        cost = max(round(actual * NANO), 0)
        after = await self.state.run(lambda b: b.settle(res.items, [cost] * len(res.items)))
        await self.alert(self.crossings(res, cost, after))

    def settle_local(self, res: Reservation, actual: float) -> list[tuple[BudgetRule, str, float, int]]:
        """Settle on the in-process backend without awaiting; returns the alert shares crossed."""
        cost = max(round(actual * NANO), 0)
        after = self.state.local.settle_now(res.items, [cost] * len(res.items))
        return self.crossings(res, cost, after)

    @staticmethod
    def crossings(res: Reservation, cost: int, after: list[int]) -> list[tuple[BudgetRule, str, float, int]]:
        out = []
        for (rule, value), spent in zip(res.rules, after, strict=True):
            if spent < 0:  # the counter was lost; the next reservation seeds it from the ledger
                continue
            before = spent - cost
            cap = rule.cap_usd * NANO
            out += [(rule, value, share, spent) for share in sorted(rule.alerts) if before < share * cap <= spent]
        return out

    async def alert(self, crossed: list[tuple[BudgetRule, str, float, int]]) -> None:
        now = self.now()
        for rule, value, share, spent in crossed:
            what = f"{rule.scope} '{value}'" if rule.scope != "tag" else f"tag {value}"
            await self._alert_once(rule, value, now, "budget_alert", f"{what} reached {share:.0%} of its "
                                   f"{rule.period} budget: ${spent / NANO:.6f} of ${rule.cap_usd:g}", share)

    async def _alert_once(self, rule: BudgetRule, value: str, now: datetime, kind: str, message: str,
                          share: float | None = None) -> None:
        flag = self._key(rule, value, now) + f":{kind}:{share or ''}"
        if await self.state.run(lambda b: b.flag(flag, TTL[rule.period] or 10 * 365 * 86400)):
            data = {"scope": rule.scope, "subject": value, "period": rule.period, "cap_usd": rule.cap_usd,
                    "share": share}
            await asyncio.to_thread(self.emit, kind, value, message, data)

    def _spent_from_ledger(self, rule: BudgetRule, value: str, now: datetime) -> int:
        q = select(func.coalesce(func.sum(LedgerRow.cost_usd), 0.0)).where(
            or_(LedgerRow.role.is_(None), LedgerRow.role != "shadow"))
        start = period_start(rule.period, now)
        if start is not None:
            q = q.where(LedgerRow.started_at >= start)
        if rule.scope == "key":
            q = q.where(LedgerRow.key_id == value)
        elif rule.scope == "team":
            q = q.where(LedgerRow.team == value)
        else:
            name, _, tag_value = value.partition("=")
            q = q.where(LedgerRow.tags[name].as_string() == tag_value)
        with self.db.connect() as conn:
            total = float(conn.execute(q).scalar() or 0.0)
        return round(total * NANO)

