"""Canary rollouts: watch each canary against its primaries, roll back the worse, step up the healthy.

The rollout's state lives in the route config itself: the canary deployment's ``traffic`` is the current
step, ``canary.steps`` the plan (the route's ``canary`` settings, under the canary deployment's own ones,
which belong to that rollout and go with it). So every step, promotion and rollback is an ordinary route change:
applied without a restart, recorded in the audit trail (with the reason) and replayed at startup. What
is kept in memory is only the evidence: a sliding window of outcomes per side, and when the current
step began (a restart starts the step's clock again, which only delays the next step).

``reconcile(now)`` is one pass of the control loop; the gateway calls it every second, tests call it
with a fake clock. A canary its circuit breaker has ejected gets no traffic, hence no more evidence: it
is rolled back at once (unless the primaries are ejected too: then the upstream is down, not the canary
worse), instead of holding its traffic share forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from strata.errors import InvalidRequest, NotFound
from strata.routing.analysis import Outcome, Verdict, Window, compare
from strata.routing.answer_drift import Answer
from strata.routing.config import DeploymentConfig, RouteConfig

log = logging.getLogger(__name__)
WINDOW_MAX = 20_000  # outcomes kept per side: plenty for the tests, bounded memory at any request rate
SYSTEM_ACTOR = "strata:canary-analysis"

# apply(old, new, action, actor, reason) swaps a route's config in, recorded in the audit trail
Apply = Callable[[RouteConfig, RouteConfig, str, str, str], Awaitable[Any]]
Emit = Callable[[str, str, str, dict[str, Any]], Any]
# gate(route, canary, stage, actor): raises GateRefused when the canary may not start/step/be promoted
Gate = Callable[[RouteConfig, DeploymentConfig, str, str], Awaitable[None]]


class GateRefused(InvalidRequest):
    """A rollout gate (an eval suite, ``evals.gates``) refused a canary's start, step or promotion."""

    status = 409
    code = "gate_refused"


def _never(deployment: str) -> bool:
    return False


async def _open_gate(route: RouteConfig, canary: DeploymentConfig, stage: str, actor: str) -> None:
    return None


def _window() -> Window:
    return Window(deque(maxlen=WINDOW_MAX), deque(maxlen=WINDOW_MAX), deque(maxlen=WINDOW_MAX),
                  deque(maxlen=WINDOW_MAX))


@dataclass(slots=True)
class Rollout:
    canary: str
    step_started: float
    last_analysis: float = float("-inf")
    canary_window: Window = field(default_factory=lambda: _window())
    primary_window: Window = field(default_factory=lambda: _window())
    verdict: Verdict | None = None
    decision: str = "waiting"

    def window(self, role: str) -> Window | None:
        if role == "canary":
            return self.canary_window
        return self.primary_window if role == "primary" else None


class Rollouts:
    def __init__(self, routes: Callable[[], dict[str, RouteConfig]], apply: Apply, emit: Emit,
                 clock: Callable[[], float] = time.monotonic, ejected: Callable[[str], bool] = _never) -> None:
        self.routes = routes
        self.apply = apply
        self.emit = emit
        self.clock = clock
        self.ejected = ejected  # is this deployment out of rotation (circuit breaker not closed)?
        self.gate: Gate = _open_gate  # eval gates (``evals.gates``), set by the composition root
        self.active: dict[str, Rollout] = {}
        self.sync()

    def sync(self) -> None:
        """Track every route that has a canary; a new canary (or a new step) starts a new step clock."""
        now = self.clock()
        seen = set()
        for name, route in self.routes().items():
            canary = route.deployment("canary")
            if canary is None:
                continue
            seen.add(name)
            current = self.active.get(name)
            if current is None or current.canary != canary.name:
                self.active[name] = Rollout(canary.name, now)
        for name in set(self.active) - seen:
            del self.active[name]

    # -- evidence, from the request path ----------------------------------------------------------------

    def record(self, route: str, role: str, ok: bool, latency: float = 0.0, ttft: float | None = None,
               cost: float = 0.0) -> None:
        rollout = self.active.get(route)
        if rollout is not None and (w := rollout.window(role)) is not None:
            w.outcomes.append(Outcome(self.clock(), ok, latency, ttft, cost))

    def feedback(self, route: str, role: str, score: float) -> None:
        rollout = self.active.get(route)
        if rollout is not None and (w := rollout.window(role)) is not None:
            w.scores.append((self.clock(), score))

    def quality(self, route: str, role: str, score: float) -> None:
        """An online quality score (0..1) of an answer the ``role`` deployment served (``observe.quality``)."""
        rollout = self.active.get(route)
        if rollout is not None and (w := rollout.window(role)) is not None:
            w.quality.append((self.clock(), score))

    def answer(self, route: str, role: str, vector: list[float] | None, tokens: int, refusal: bool) -> None:
        """A drift sample of an answer the ``role`` deployment served, embedded (``observe.drift``)."""
        rollout = self.active.get(route)
        if rollout is not None and (w := rollout.window(role)) is not None:
            w.answers.append((self.clock(), Answer(vector, tokens, refusal)))

    # -- the control loop -------------------------------------------------------------------------------

    async def reconcile(self, now: float | None = None) -> list[str]:
        """Analyse every canary that is due; act on the verdict. Returns the actions taken."""
        now = self.clock() if now is None else now
        taken = []
        for name, rollout in list(self.active.items()):
            route = self.routes().get(name)
            canary = route.deployment("canary") if route else None
            if route is None or canary is None or canary.name != rollout.canary:
                continue
            cfg = route.canary_settings()
            if now - rollout.last_analysis < cfg.interval:
                continue
            rollout.last_analysis = now
            for w in (rollout.canary_window, rollout.primary_window):
                w.prune(now - cfg.window)
            windows = (rollout.canary_window, rollout.primary_window, cfg)
            # answer drift runs permutation tests (tens of ms): off the event loop, so no request waits on it
            verdict = rollout.verdict = (await asyncio.to_thread(compare, *windows) if cfg.max_answer_drift is not None
                                         else compare(*windows))
            ejection = self._ejection(route, canary, rollout)
            action = "rollback" if ejection else self.decide(route, canary, rollout, verdict, now)
            rollout.decision = action
            try:
                if action == "promote":
                    await self.promote(name, SYSTEM_ACTOR, "canary passed every step")
                elif action == "advance":
                    await self._advance(route, canary, rollout, verdict)
            except GateRefused as exc:  # a canary its eval gate refuses goes, as one worse on live traffic would
                action = rollout.decision = "rollback"
                await self.rollback(name, SYSTEM_ACTOR, exc.message)
            if action == "rollback" and name in self.active:
                await self.rollback(name, SYSTEM_ACTOR, ejection or f"canary worse than primary: {verdict.reason}")
            if action in ("rollback", "promote", "advance"):
                taken.append(f"{name}:{action}")
        return taken

    def decide(self, route: RouteConfig, canary: DeploymentConfig, rollout: Rollout, verdict: Verdict,
               now: float) -> str:
        if verdict.worse:
            return "rollback"
        cfg = route.canary_settings()
        nxt = next_step(cfg.steps, canary.traffic or 0)
        if nxt is None and not (cfg.steps and cfg.auto_promote):
            return "hold"  # no plan (or no auto-promotion): wait for `strata deploy promote`
        in_step = rollout.canary_window.count_since(rollout.step_started)
        if now - rollout.step_started < cfg.step_min_seconds or in_step < cfg.step_min_requests:
            return "waiting"
        if not verdict.checks[0].decided:  # the error rate always needs enough data on both sides
            return "waiting"
        return "advance" if nxt is not None else "promote"

    def _ejection(self, route: RouteConfig, canary: DeploymentConfig, rollout: Rollout) -> str | None:
        """Why an ejected canary must go, or None while it is in rotation (or every primary is out too)."""
        if not self.ejected(canary.name):
            return None
        if all(self.ejected(d.name) for d in route.deployments if d.role == "primary"):
            return None
        seen = rollout.canary_window.outcomes
        rate = f" (error rate {sum(not o.ok for o in seen) / len(seen):.0%} over {len(seen)} canary requests)" \
            if seen else ""
        return f"canary ejected by its circuit breaker after repeated failures{rate}"

    async def _advance(self, route: RouteConfig, canary: DeploymentConfig, rollout: Rollout,
                       verdict: Verdict) -> None:
        nxt = next_step(route.canary_settings().steps, canary.traffic or 0)
        assert nxt is not None
        await self.gate(route, canary, "step", SYSTEM_ACTOR)
        new = with_deployment(route, canary.model_copy(update={"traffic": nxt}))
        reason = f"step passed ({verdict.canary_requests} canary requests, no metric worse): {canary.traffic:g}% " \
                 f"-> {nxt:g}%"
        await self.apply(route, new, "canary_step", SYSTEM_ACTOR, reason)
        rollout.step_started = self.clock()
        self.emit("canary_step", route.name, reason, {"deployment": canary.name, "traffic": nxt})

    # -- operator actions (also used by the loop) -------------------------------------------------------

    async def rollback(self, route_name: str, actor: str, reason: str) -> RouteConfig:
        route, canary = self._canary(route_name)
        new = route.model_copy(update={"deployments": [d for d in route.deployments if d.name != canary.name]})
        evidence = self._evidence(route_name)  # the rollout is forgotten once the canary is gone
        await self.apply(route, new, "canary_rollback", actor, reason)
        self.active.pop(route_name, None)
        self.emit("canary_rollback", route_name, f"canary {canary.name} rolled back: {reason}",
                  {"deployment": canary.name, "traffic": canary.traffic, "actor": actor, **evidence})
        log.warning("route %s: canary %s rolled back by %s: %s", route_name, canary.name, actor, reason)
        return new

    async def promote(self, route_name: str, actor: str, reason: str) -> RouteConfig:
        """The canary becomes the primary; the primaries it replaces (same tier) drain and go."""
        route, canary = self._canary(route_name)
        await self.gate(route, canary, "promote", actor)
        promoted = canary.model_copy(update={"role": "primary", "traffic": None, "canary": None})  # its rollout's
        deps = [promoted if d.name == canary.name else d for d in route.deployments
                if not (d.role == "primary" and d.tier == canary.tier)]
        new = route.model_copy(update={"deployments": deps})
        evidence = self._evidence(route_name)
        await self.apply(route, new, "canary_promote", actor, reason)
        self.active.pop(route_name, None)
        self.emit("canary_promote", route_name, f"canary {canary.name} promoted: {reason}",
                  {"deployment": canary.name, "actor": actor, **evidence})
        log.info("route %s: canary %s promoted by %s", route_name, canary.name, actor)
        return new

    def status(self, route_name: str) -> dict[str, Any] | None:
        route = self.routes().get(route_name)
        rollout = self.active.get(route_name)
        canary = route.deployment("canary") if route else None
        if route is None or rollout is None or canary is None:
            return None
        steps = route.canary_settings().steps
        return {"canary": canary.name, "traffic": canary.traffic, "steps": steps,
                "next_step": next_step(steps, canary.traffic or 0), "settings": canary.canary or {},
                "step_seconds": round(self.clock() - rollout.step_started, 3),
                "step_requests": rollout.canary_window.count_since(rollout.step_started),
                "decision": rollout.decision,
                "analysis": rollout.verdict.as_dict() if rollout.verdict else None}

    def _evidence(self, route_name: str) -> dict[str, Any]:
        rollout = self.active.get(route_name)
        return {"analysis": rollout.verdict.as_dict()} if rollout and rollout.verdict else {}

    def _canary(self, route_name: str) -> tuple[RouteConfig, DeploymentConfig]:
        route = self.routes().get(route_name)
        if route is None:
            raise NotFound(f"no route named {route_name!r}", param="route", code="route_not_found")
        canary = route.deployment("canary")
        if canary is None:
            raise InvalidRequest(f"route {route_name!r} has no canary", param="route", code="no_canary")
        return route, canary


def next_step(steps: list[float], traffic: float) -> float | None:
    return next((s for s in steps if s > traffic), None)


def with_deployment(route: RouteConfig, dep: DeploymentConfig) -> RouteConfig:
    deps = [dep if d.name == dep.name else d for d in route.deployments]
    if not any(d.name == dep.name for d in route.deployments):
        deps.append(dep)
    return route.model_copy(update={"deployments": deps})
