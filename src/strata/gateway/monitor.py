"""The gateway's control loops, as steps for ``strata.app.loops.LoopRunner`` (``control_loops`` lists them).

Each step is one idempotent pass; the runner wraps it (an exception is logged and counted, the loop goes
on), times it and supervises its task. Intervals are the ones the config names: engine health every
``supervisor.health_interval``; key, policy and route-change sync every ``keys.sync_interval``; canary
analysis at the shortest canary ``interval`` of any route; cost alerts every ``cost_alerts.interval``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from strata.app.loops import Loop
from strata.engines.base import Engine, EngineHealth
from strata.engines.local import LocalEngine
from strata.gateway import routes_admin
from strata.gateway.state import AppState
from strata.observe.costs import anomalies, cost_report
from strata.observe.slo import export_objectives
from strata.routing.breaker import CLOSED, HALF_OPEN, OPEN

log = logging.getLogger(__name__)
BREAKER_CODES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
START_ORDER = {"llamacpp": 0, "openai": 1, "sentence-transformers": 2}
PROBE_TIMEOUT = 5.0  # seconds one engine's health probe may take (an HTTP engine's own probe gives up at 5 s)


def control_loops(state: AppState) -> list[Loop]:
    """Every background loop of the gateway, in the order they start."""
    s = state.settings
    loops = [
        Loop("start-engines", lambda: start_engines(state), 0, once=True),
        Loop("monitor-engines", EngineMonitor(state).step, s.supervisor.health_interval),
        Loop("key-sync", state.governance.auth.refresh, s.keys.sync_interval, delay_first=True),
        Loop("canary-analysis", lambda: analyse_canaries(state), lambda: canary_interval(state)),
        Loop("policy-sync", lambda: asyncio.to_thread(state.governance.policies.load), s.keys.sync_interval,
             delay_first=True),
        Loop("route-follow", lambda: routes_admin.follow(state), s.keys.sync_interval, delay_first=True),
        Loop("slo-objectives", lambda: publish_objectives(state), s.keys.sync_interval),
    ]
    if state.observe.alerts is not None:
        loops.append(Loop("alert-forward", state.observe.alerts.step, s.alerts.group_interval))
    if s.cost_alerts.enabled:
        loops.append(Loop("cost-alerts", lambda: watch_costs(state), s.cost_alerts.interval))
    if state.observe.drift is not None:
        loops.extend(state.observe.drift.loops())  # drift-samples (embed, write), drift-check (reports)
    if state.observe.metrics_exporter is not None:
        loops.append(Loop("otlp-metrics", state.observe.metrics_exporter.step, s.metrics.export_interval,
                          delay_first=True))
    return loops


async def publish_objectives(state: AppState) -> None:
    """``strata_slo_objective`` and the latency thresholds, from the routes as they are now (run-time changes too)."""
    export_objectives(state.observe.metrics, list(state.routing.router.routes.values()))


async def start_engines(state: AppState) -> None:
    """Start engines; local workers one by one, LLMs first, so the first token is not slowed by heavy imports."""
    ordered = sorted(state.routing.engines.values(), key=lambda e: START_ORDER.get(e.engine_type, 9))
    for engine in ordered:
        t0 = time.perf_counter()
        await engine.start()
        if isinstance(engine, LocalEngine):
            ready = await engine.supervisor.wait_ready(engine.supervisor.startup_timeout)
            log.info("engine %s %s after %.2fs", engine.name, "ready" if ready else "NOT ready",
                     time.perf_counter() - t0)


class EngineMonitor:
    """Health of every engine (probed concurrently), and the gauges an operator watches."""

    def __init__(self, state: AppState, probe_timeout: float = PROBE_TIMEOUT) -> None:
        self.state = state
        self.probe_timeout = probe_timeout
        self.restarts_seen: dict[str, int] = {}  # the worker's restart count at the last pass, per deployment

    async def step(self) -> None:
        state, m = self.state, self.state.observe.metrics
        engines = list(state.routing.engines.items())
        results = await asyncio.gather(*(self.probe(name, engine) for name, engine in engines))
        for (name, _), h in zip(engines, results, strict=True):
            if h is None or name not in state.routing.engines:  # the probe failed, or the engine was removed meanwhile
                continue
            state.routing.health[name] = h
            m.engine_up.labels(name).set(1 if h.ready else 0)
            m.engine_busy.labels(name).set(h.busy_slots)
            m.engine_queue.labels(name).set(h.queue_depth)
            m.engine_restarts.labels(name).inc(new_restarts(self.restarts_seen, name, h.restarts))
        for route in list(state.routing.router.routes.values()):
            m.route_panic.labels(route.name).set(1 if state.routing.router.in_panic(route) else 0)
        for name, dep in list(state.routing.router.deployments.items()):
            m.breaker.labels(name).set(BREAKER_CODES[dep.breaker.state])
            m.deployment_in_flight.labels(name).set(dep.outstanding)
        m.ledger_pending.set(state.observe.ledger.pending)

    async def probe(self, name: str, engine: Engine) -> EngineHealth | None:
        """One engine's health; a probe that hangs says unreachable, one that raises keeps the last known."""
        try:
            return await asyncio.wait_for(engine.health(), self.probe_timeout)
        except TimeoutError:
            return EngineHealth(ready=False, state="unreachable",
                                detail=f"health probe timed out after {self.probe_timeout:g}s")
        except Exception:  # a failing probe must not stop the others
            log.exception("health check of %s failed", name)
            return None


def new_restarts(seen: dict[str, int], name: str, count: int) -> int:
    """Restarts since the last pass; an engine replaced under the same name starts counting from 0 again."""
    last = seen.get(name, 0)
    seen[name] = count
    return count - last if count >= last else count


async def analyse_canaries(state: AppState) -> None:
    """One pass of the canary control loop: analyse every canary that is due, step it up, promote or roll it
    back. The gauge is refreshed even when the analysis fails (e.g. the database briefly away)."""
    try:
        await state.routing.rollouts.reconcile()
    finally:
        state.observe.metrics.canary_traffic.clear()  # a canary rolled back or promoted leaves the gauge
        for name, dep in state.routing.router.canaries.items():
            state.observe.metrics.canary_traffic.labels(name, dep.name).set((dep.traffic or 0) / 100)  # config says %


def canary_interval(state: AppState) -> float:
    return min((r.canary_settings().interval for r in state.routing.router.routes.values()), default=1.0)


async def watch_costs(state: AppState) -> None:
    """Week-over-week cost alerts: one ``cost_anomaly`` event per group and week, across replicas."""
    cfg = state.settings.cost_alerts
    report = await asyncio.to_thread(cost_report, state.db, cfg.by, "14d")
    week = time.strftime("%G-W%V", time.gmtime())
    for g in anomalies(report, cfg.threshold_pct, cfg.min_usd):
        flag = state.governance.shared.key("cost-anomaly", cfg.by, g["group"], week)
        if await set_once(state, flag, 8 * 86400):
            message = (f"{cfg.by} {g['group']!r}: ${g['this_week_usd']:.2f} this week vs "
                       f"${g['last_week_usd']:.2f} last week ({g['wow_change_pct']:+.0f}%)")
            await asyncio.to_thread(state.observe.events.emit, "cost_anomaly", str(g["group"]), message,
                                    {k: g[k] for k in ("this_week_usd", "last_week_usd", "wow_change_pct")})


async def set_once(state: AppState, flag: str, ttl_s: int) -> bool:
    return await state.governance.shared.run(lambda b: b.flag(flag, ttl_s))
