"""Running the gateway: the lifespan starts what ``build_state`` built and stops it in order.

Startup order: ledger writer (replaying the journals of crashed processes) -> trace exporter -> control
loops (local engine workers start in the background, LLMs first; health, key/policy/route sync, canaries, cost
alerts). Shutdown runs after uvicorn has finished in-flight requests: loops stop, side tasks end, budgets
settle, the ledger drains (no row is lost), traces go out, engines stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from starlette.applications import Starlette

from strata.app.loops import LoopRunner
from strata.gateway.monitor import control_loops
from strata.gateway.state import AppState

log = logging.getLogger(__name__)


def lifespan(state: AppState, loops: LoopRunner) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def run(app: Starlette) -> AsyncIterator[None]:
        await startup(state, loops)
        try:
            yield
        finally:
            await shutdown(state, loops)

    return run


async def startup(state: AppState, loops: LoopRunner) -> None:
    state.observe.ledger.start()
    if state.observe.tracer.exporter is not None:
        state.observe.tracer.exporter.start()
    for loop in control_loops(state):  # engine start, health, key/policy/route sync, canaries, cost alerts
        loops.start(loop)
    gc.collect()
    gc.freeze()  # startup objects (modules, config, tables) never become garbage: keep them out of GC passes


async def _last_alerts(state: AppState) -> None:
    """Events of the last moments still go out (one bounded try), then the forwarder's client closes."""
    forwarder = state.observe.alerts
    if forwarder is None:
        return
    try:
        await asyncio.wait_for(forwarder.step(), state.settings.alerts.timeout)
    except (TimeoutError, OSError):
        log.warning("alerts: the last events were not forwarded before shutdown")
    await forwarder.close()


async def shutdown(state: AppState, loops: LoopRunner) -> None:
    await loops.stop()
    await _last_alerts(state)
    for task in [*state.tasks.drains, *state.tasks.background]:
        task.cancel()
    await asyncio.gather(*state.tasks.drains, *state.tasks.background, return_exceptions=True)
    await asyncio.gather(*state.governance.settling, return_exceptions=True)  # budgets settle before we stop
    await state.governance.shared.close()
    await state.observe.ledger.close()
    if state.observe.metrics_exporter is not None:
        await state.observe.metrics_exporter.close()  # the final totals go out too
    if state.observe.tracer.exporter is not None:
        await asyncio.to_thread(state.observe.tracer.exporter.close)  # the traces of the last requests go out too
    await asyncio.gather(*(e.close() for e in state.routing.engines.values()), return_exceptions=True)
    if state.vector_stores is not None:
        await state.vector_stores.rag.close()  # index files flushed and closed
    state.db.dispose()
    log.info("stopped: ledger drained, engines closed")
