"""The governance stage of the pipeline: rate limits and budgets, before the engine and after it.

``admit`` runs after routing: it checks and consumes every matching rate limit, then reserves the
request's maximum cost on every matching budget; either refusal is a 429 naming the limit. ``settle``
runs once the request is accounted (success or failure): it charges the tokens learnt from the answer
and turns the reservation into the real cost. With no limits and no budgets configured, both are a
single attribute check.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy import Engine as DbEngine

from strata.governance.budgets import Budgets, Reservation, max_cost
from strata.governance.keys import Principal
from strata.governance.limits import Admission, RateLimits
from strata.governance.policies import PolicyStore
from strata.routing.config import RouteConfig
from strata.state.base import NANO
from strata.state.shared import SharedState


class Governor:
    def __init__(self, state: SharedState, policies: PolicyStore, db: DbEngine,
                 emit: Callable[[str, str, str, dict[str, Any]], Any]) -> None:
        self.state = state
        self.policies = policies
        self.limits = RateLimits(state, lambda: policies.limits)
        self.budgets = Budgets(state, lambda: policies.budgets, db, emit)

    @property
    def active(self) -> bool:
        return bool(self.policies.limits or self.policies.budgets)

    async def admit(self, principal: Principal, route: RouteConfig, tags: dict[str, str], prompt_tokens: int,
                    output_limit: int | None, context: Callable[[str], int | None]
                    ) -> tuple[Admission | None, Reservation | None]:
        plan = self.limits.plan(principal, route.name) if self.policies.limits else []
        prepared = self.budgets.prepare(principal, tags, max_cost(route, prompt_tokens, output_limit, context)) \
            if self.policies.budgets else None
        if prepared is not None and self.state.remote is not None:
            await self.state.probe()
            if self.state.epoch:
                await self.budgets.catch_up(prepared)
        if not plan:
            return None, await self.budgets.conclude(prepared, await self.state.run(
                lambda b: b.reserve(prepared.items, prepared.ttls))) if prepared else None
        items = self.limits.items_for(plan, prompt_tokens)
        if prepared is None:
            result = await self.state.run(lambda b: b.rate(items))
            return self.limits.conclude(plan, items, result, prompt_tokens), None
        # both: one round trip (a pipeline on Redis)
        rate, budget = await self.state.run(lambda b: b.admit(items, prepared.items, prepared.ttls))
        if not rate.allowed and budget is not None and budget.allowed:  # give the reservation back
            await self.state.run(lambda b: b.settle(prepared.items, [0] * len(prepared.items)))
        admission = self.limits.conclude(plan, items, rate, prompt_tokens)
        assert budget is not None
        return admission, await self.budgets.conclude(prepared, budget)

    def settle_inline(self, admission: Admission | None, reservation: Reservation | None, prompt_tokens: int,
                      completion_tokens: int, cost: float) -> Coroutine[Any, Any, None] | None:
        """Settle at once when counters are in-process (nothing to await); otherwise, or when an alert is
        due, return the coroutine to run in the background."""
        if self.state.remote is not None:
            return self.settle(admission, reservation, prompt_tokens, completion_tokens, cost)
        if admission is not None and (items := self.limits.charges(admission, prompt_tokens, completion_tokens)):
            self.state.local.charge_now(items)
        if reservation is not None and (crossed := self.budgets.settle_local(reservation, cost)):
            return self.budgets.alert(crossed)
        return None

    async def settle(self, admission: Admission | None, reservation: Reservation | None, prompt_tokens: int,
                     completion_tokens: int, cost: float) -> None:
        charges = self.limits.charges(admission, prompt_tokens, completion_tokens) if admission else []
        if reservation is None:
            if charges:
                await self.state.run(lambda b: b.charge(charges))
            return
        nano = max(round(cost * NANO), 0)
        items = reservation.items
        after = await self.state.run(lambda b: b.finish(charges, items, [nano] * len(items)))
        await self.budgets.alert(self.budgets.crossings(reservation, nano, after))
