"""Engine control loops: staggered startup of local workers, and a health/metrics reconcile loop."""

from __future__ import annotations

import asyncio
import logging
import time

from strata.engines.local import LocalEngine
from strata.gateway.state import AppState
from strata.observe.costs import anomalies, cost_report
from strata.routing.breaker import CLOSED, HALF_OPEN, OPEN

log = logging.getLogger(__name__)
BREAKER_CODES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
START_ORDER = {"llamacpp": 0, "openai": 1, "sentence-transformers": 2}


async def start_engines(state: AppState) -> None:
    """Start engines; local workers one by one, LLMs first, so the first token is not slowed by heavy imports."""
    ordered = sorted(state.engines.values(), key=lambda e: START_ORDER.get(e.engine_type, 9))
    for engine in ordered:
        t0 = time.perf_counter()
        await engine.start()
        if isinstance(engine, LocalEngine):
            ready = await engine.supervisor.wait_ready(engine.supervisor.startup_timeout)
            log.info("engine %s %s after %.2fs", engine.name, "ready" if ready else "NOT ready",
                     time.perf_counter() - t0)


async def monitor_engines(state: AppState) -> None:
    m = state.metrics
    restarts_seen: dict[str, int] = {}  # the worker's restart count at the last pass, per deployment
    while True:
        for name, engine in list(state.engines.items()):
            try:
                h = await engine.health()
            except Exception:  # a failing probe must not stop the loop
                log.exception("health check of %s failed", name)
                continue
            if name not in state.engines:  # removed while we probed it
                continue
            state.health[name] = h
            m.engine_up.labels(name).set(1 if h.ready else 0)
            m.engine_busy.labels(name).set(h.busy_slots)
            m.engine_queue.labels(name).set(h.queue_depth)
            m.engine_restarts.labels(name).inc(new_restarts(restarts_seen, name, h.restarts))
        for route in list(state.router.routes.values()):
            m.route_panic.labels(route.name).set(1 if state.router.in_panic(route) else 0)
        for name, dep in list(state.router.deployments.items()):
            m.breaker.labels(name).set(BREAKER_CODES[dep.breaker.state])
            m.deployment_in_flight.labels(name).set(dep.outstanding)
        m.ledger_pending.set(state.ledger.pending)
        await asyncio.sleep(state.settings.supervisor.health_interval)


def new_restarts(seen: dict[str, int], name: str, count: int) -> int:
    """Restarts since the last pass; an engine replaced under the same name starts counting from 0 again."""
    last = seen.get(name, 0)
    seen[name] = count
    return count - last if count >= last else count


async def analyse_canaries(state: AppState) -> None:
    """The canary control loop: analyse every canary that is due, step it up, promote or roll it back."""
    while True:
        try:
            await state.rollouts.reconcile()
        except Exception:  # a failed pass (e.g. the database briefly away) is retried on the next tick
            log.exception("canary analysis failed")
        state.metrics.canary_traffic.clear()  # a canary rolled back or promoted leaves the gauge
        for name, dep in state.router.canaries.items():
            state.metrics.canary_traffic.labels(name, dep.name).set((dep.traffic or 0) / 100)  # config says %
        await asyncio.sleep(min((r.canary_settings().interval for r in state.router.routes.values()),
                                default=1.0))


async def sync_policies(state: AppState) -> None:
    """Re-read run-time limits and budgets, so a change made through another replica applies here too."""
    while True:
        await asyncio.sleep(state.settings.keys.sync_interval)
        try:
            await asyncio.to_thread(state.policies.load)
        except Exception:
            log.exception("policy sync failed")


async def watch_costs(state: AppState) -> None:
    """Week-over-week cost alerts: one ``cost_anomaly`` event per group and week, across replicas."""
    cfg = state.settings.cost_alerts
    while True:
        try:
            report = await asyncio.to_thread(cost_report, state.db, cfg.by, "14d")
            week = time.strftime("%G-W%V", time.gmtime())
            for g in anomalies(report, cfg.threshold_pct, cfg.min_usd):
                flag = state.shared.key("cost-anomaly", cfg.by, g["group"], week)
                if await set_once(state, flag, 8 * 86400):
                    message = (f"{cfg.by} {g['group']!r}: ${g['this_week_usd']:.2f} this week vs "
                               f"${g['last_week_usd']:.2f} last week ({g['wow_change_pct']:+.0f}%)")
                    await asyncio.to_thread(state.events.emit, "cost_anomaly", str(g["group"]), message,
                                            {k: g[k] for k in ("this_week_usd", "last_week_usd", "wow_change_pct")})
        except Exception:
            log.exception("cost alert check failed")
        await asyncio.sleep(cfg.interval)


async def set_once(state: AppState, flag: str, ttl_s: int) -> bool:
    return await state.shared.run(lambda b: b.flag(flag, ttl_s))
