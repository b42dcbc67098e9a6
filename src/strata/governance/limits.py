"""Rate limits: requests and tokens per minute per key, team and route, the strictest deciding.

At admission every matching rule is checked and consumed atomically (all or none): one request on each
RPM counter, the prompt's estimated tokens on each TPM counter. After the response, the tokens not known
at admission (completion, and any prompt tokens beyond the estimate) are charged, so the next request
sees them. Responses carry OpenAI's ``x-ratelimit-*`` headers for the strictest limit of each kind.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from strata.errors import RateLimited
from strata.governance.config import LimitRule
from strata.governance.keys import Principal
from strata.state.base import RateItem, RateResult
from strata.state.shared import SharedState

WINDOW_MS = 60_000.0
SCOPE_NAMES = {"key": "key", "team": "team", "route": "model", "deployment": "deployment"}


@dataclass(slots=True)
class Admission:
    tokens: list[RateItem] = field(default_factory=list)  # TPM counters to settle against
    prompt_estimate: int = 0
    headers: dict[str, str] = field(default_factory=dict)


def subject_of(scope: str, principal: Principal, route: str) -> str:
    return principal.key_id if scope == "key" else principal.team if scope == "team" else route


class RateLimits:
    def __init__(self, state: SharedState, rules: Callable[[], list[LimitRule]]) -> None:
        self.state = state
        self.rules = rules
        self._plans_for: list[LimitRule] | None = None
        self._plans: dict[tuple[str, str, str], list[tuple[LimitRule, str, str, int, str]]] = {}

    def matching(self, principal: Principal, route: str) -> list[tuple[LimitRule, str]]:
        out = []
        for rule in self.rules():
            if rule.scope == "deployment":  # checked per attempt, see ``admit_deployment``
                continue
            value = subject_of(rule.scope, principal, route)
            if rule.subject in ("*", value):
                out.append((rule, value))
        return out

    def plan(self, principal: Principal, route: str) -> list[tuple[LimitRule, str, str, int, str]]:
        """(rule, subject, kind, limit, counter key) of every counter a caller's request moves; cached until
        the rules change (they are replaced, never mutated)."""
        rules = self.rules()
        cache_key = (principal.key_id, principal.team, route)
        if self._plans_for is not rules:
            self._plans_for, self._plans = rules, {}
        found = self._plans.get(cache_key)
        if found is None:
            found = [(rule, value, kind, limit, self.state.key("rl", rule.scope, value, rule.subject, kind))
                     for rule, value in self.matching(principal, route)
                     for kind, limit in (("requests", rule.rpm), ("tokens", rule.tpm)) if limit is not None]
            if len(self._plans) > 10_000:
                self._plans.clear()
            self._plans[cache_key] = found
        return found

    def has_deployment_limits(self) -> bool:
        return any(r.scope == "deployment" for r in self.rules())

    async def admit_deployment(self, deployment: str, prompt_tokens: int) -> Admission | None:
        """A deployment's own limits, checked when an attempt is about to use it: a deployment at its limit
        is skipped for the next one (like a full one); when every one is, the client gets the 429."""
        plan = [(rule, deployment, kind, limit, self.state.key("rl", "deployment", deployment, rule.subject, kind))
                for rule in self.rules() if rule.scope == "deployment" and rule.subject in ("*", deployment)
                for kind, limit in (("requests", rule.rpm), ("tokens", rule.tpm)) if limit is not None]
        return await self._consume(plan, prompt_tokens) if plan else None

    async def admit(self, principal: Principal, route: str, prompt_tokens: int) -> Admission | None:
        plan = self.plan(principal, route)
        if not plan:
            return None
        return await self._consume(plan, prompt_tokens)

    async def _consume(self, plan: list[tuple[LimitRule, str, str, int, str]], prompt_tokens: int) -> Admission:
        items = self.items_for(plan, prompt_tokens)
        result = await self.state.run(lambda b: b.rate(items))
        return self.conclude(plan, items, result, prompt_tokens)

    @staticmethod
    def items_for(plan: list[tuple[LimitRule, str, str, int, str]], prompt_tokens: int) -> list[RateItem]:
        return [RateItem(key, WINDOW_MS / limit, WINDOW_MS, 1 if kind == "requests" else prompt_tokens)
                for _, _, kind, limit, key in plan]

    def conclude(self, plan: list[tuple[LimitRule, str, str, int, str]], items: list[RateItem], result: RateResult,
                 prompt_tokens: int) -> Admission:
        """The admission (headers, token counters to settle), or the 429 naming the limit that refused."""
        labels = [(rule, value, kind, limit) for rule, value, kind, limit, _ in plan]
        if not result.allowed:
            rule, value, kind, limit = labels[result.failed]
            self.state.metrics.limited.labels(rule.scope, kind).inc()
            wait = max(result.retry_after_ms / 1000, 0.001)
            per = "requests per minute" if kind == "requests" else "tokens per minute"
            too_big = kind == "tokens" and prompt_tokens > limit
            message = (f"Rate limit reached for {SCOPE_NAMES[rule.scope]} '{value}' on {per}: limit {limit}. "
                       + (f"This request alone needs about {prompt_tokens} tokens." if too_big
                          else f"Please try again in {_duration(wait)}."))
            raise RateLimited(message, code="rate_limit_exceeded", retry_after=None if too_big else math.ceil(wait))
        adm = Admission(prompt_estimate=prompt_tokens)
        best: dict[str, tuple[int, int, float]] = {}
        assert result.remaining is not None and result.reset_ms is not None
        for (_rule, _value, kind, limit), item, left, reset in zip(labels, items, result.remaining, result.reset_ms,
                                                                  strict=True):
            if kind == "tokens":
                adm.tokens.append(item)
            if kind not in best or left < best[kind][1]:
                best[kind] = (limit, left, reset)
        for kind, (limit, left, reset) in best.items():
            adm.headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            adm.headers[f"x-ratelimit-remaining-{kind}"] = str(max(left, 0))
            adm.headers[f"x-ratelimit-reset-{kind}"] = _duration(reset / 1000)
        return adm

    async def settle(self, adm: Admission, prompt_tokens: int, completion_tokens: int) -> None:
        items = self.charges(adm, prompt_tokens, completion_tokens)
        if items:
            await self.state.run(lambda b: b.charge(items))

    @staticmethod
    def charges(adm: Admission, prompt_tokens: int, completion_tokens: int) -> list[RateItem]:
        """The tokens not known at admission: the completion, and any prompt beyond the estimate."""
        extra = completion_tokens + max(prompt_tokens - adm.prompt_estimate, 0)
        if not adm.tokens or extra <= 0:
            return []
        return [RateItem(i.key, i.interval_ms, i.burst_ms, extra) for i in adm.tokens]


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``20ms``."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 1)}ms"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}m{secs:.0f}s" if minutes else f"{secs:.3g}s"
