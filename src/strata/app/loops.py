"""Supervised control loops: one runner for every background loop of the gateway.

The shape is Ray Serve's controller (``run_control_loop``): each loop is a name, an interval and one
idempotent async ``step()``; the runner calls the step, then sleeps the interval, for ever. Every step is

- wrapped: an exception is logged with the loop's name, counted in ``strata_loop_errors_total{loop}``, and
  the loop goes on at its next interval (a database that is briefly away costs one pass, not the loop);
- timed: ``strata_loop_step_seconds{loop}``, and a warning when one step takes longer than its interval.

The task running a loop is supervised too: one that dies anyway (a ``BaseException`` out of a step, an
interval that cannot be computed, a stray ``CancelledError`` while nobody cancelled it) is logged, counted in
``strata_loop_restarts_total{loop}`` and started again after ``restart_delay``; only ``stop()`` ends a loop.
``KeyboardInterrupt`` and ``SystemExit`` still stop the process. Clock and sleep are injectable, so tests
drive loops without real sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from strata.observe.metrics import Metrics

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[object]]
Sleep = Callable[[float], Awaitable[object]]


@dataclass
class Loop:
    """One control loop. ``interval``: seconds from the end of one step to the start of the next (a number,
    or a function asked after every step, for loops whose pace follows the config)."""

    name: str
    step: Step
    interval: float | Callable[[], float]
    delay_first: bool = False  # sleep one interval before the first step (startup has just done its work)
    once: bool = False  # a one-shot (starting the engines): one supervised, logged, timed step

    def next_interval(self) -> float:
        return self.interval() if callable(self.interval) else self.interval


class LoopRunner:
    """Runs loops as supervised tasks: ``start(loop)`` for each, ``await stop()`` on shutdown."""

    def __init__(self, metrics: Metrics, *, clock: Callable[[], float] = time.perf_counter,
                 sleep: Sleep = asyncio.sleep, restart_delay: float = 1.0) -> None:
        self.metrics = metrics
        self.clock = clock
        self.sleep = sleep
        self.restart_delay = restart_delay
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, loop: Loop) -> None:
        if loop.name in self.tasks and not self.tasks[loop.name].done():
            raise ValueError(f"a loop named {loop.name!r} is already running")
        self.metrics.loop_errors.labels(loop.name)  # the series exist (at 0) from the start
        self.metrics.loop_restarts.labels(loop.name)
        self.tasks[loop.name] = asyncio.create_task(self._supervise(loop), name=f"loop-{loop.name}")

    async def stop(self) -> None:
        """Cancel every loop and wait until each has ended (a step in flight is cancelled where it awaits)."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.tasks.clear()

    async def step(self, loop: Loop) -> bool:
        """One wrapped, timed step; False when it raised (logged and counted)."""
        t0 = self.clock()
        ok = True
        try:
            await loop.step()
        except Exception:
            ok = False
            self.metrics.loop_errors.labels(loop.name).inc()
            log.exception("loop %s: step failed; the loop goes on at its next interval", loop.name)
        took = self.clock() - t0
        self.metrics.loop_step_seconds.labels(loop.name).observe(took)
        if not loop.once and took > (interval := loop.next_interval()):
            log.warning("loop %s: a step took %.3fs, longer than its %.3gs interval", loop.name, took, interval)
        return ok

    async def _run(self, loop: Loop) -> None:
        if loop.delay_first:
            await self.sleep(loop.next_interval())
        while True:
            await self.step(loop)
            if loop.once:
                return
            await self.sleep(loop.next_interval())

    async def _supervise(self, loop: Loop) -> None:
        while True:
            try:
                await self._run(loop)
                return
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():  # stop(): really cancelled
                    raise
                log.error("loop %s: its task died of a CancelledError nobody asked for; restarting", loop.name)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:
                log.exception("loop %s: its task died; restarting in %.3gs", loop.name, self.restart_delay)
            self.metrics.loop_restarts.labels(loop.name).inc()
            await self.sleep(self.restart_delay)
