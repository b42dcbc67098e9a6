"""Control loops under one supervisor (``strata.app.loops``): a failing pass is logged and counted and the
loop goes on, a slow pass warns, a dead task is restarted, stop cancels; and in the gateway, a real loop
whose pass fails keeps running (policy sync while its table is unreadable), and engine health probes run
concurrently.

The runner tests drive the loops with a clock and a sleep of their own: nothing really sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from strata.app.loops import Loop, LoopRunner
from strata.config.settings import LimitRule
from strata.governance.policies import PolicyStore
from strata.observe.metrics import Metrics
from strata.store.db import open_database
from tests.test_traffic import chat, dep, engines, eventually, gateway, metric, route
from tests.upstreams import FaultyUpstream


class DrivenClock:
    """A clock that moves only when a loop sleeps (or a step says it took a while)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # let the test (and other loops) run


def runner(clock: DrivenClock, metrics: Metrics) -> LoopRunner:
    return LoopRunner(metrics, clock=clock, sleep=clock.sleep, restart_delay=5.0)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    raise AssertionError(f"{name} {labels} not exported")


class Steps:
    """A step that fails on the calls listed in ``fail`` and blocks on call ``block_at`` until cancelled."""

    def __init__(self, fail: set[int], block_at: int, error: BaseException | None = None) -> None:
        self.fail, self.block_at, self.error = fail, block_at, error
        self.calls = 0
        self.blocked = asyncio.Event()
        self.cancelled = False

    async def __call__(self) -> None:
        self.calls += 1
        if self.calls in self.fail:
            raise self.error or RuntimeError(f"pass {self.calls} failed")
        if self.calls == self.block_at:
            self.blocked.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise


async def test_a_failing_step_is_logged_counted_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    clock, metrics = DrivenClock(), Metrics()
    loops = runner(clock, metrics)
    steps = Steps(fail={1, 3}, block_at=5)
    loops.start(Loop("flaky", steps, interval=2.0))
    await asyncio.wait_for(steps.blocked.wait(), 5)
    await loops.stop()

    assert steps.cancelled and not loops.tasks  # stop cancelled the pass in flight and waited for it
    assert sample(metrics, "strata_loop_errors_total", loop="flaky") == 2
    assert sample(metrics, "strata_loop_step_seconds_count", loop="flaky") == 4  # the 5th never finished
    assert sample(metrics, "strata_loop_restarts_total", loop="flaky") == 0
    assert clock.slept == [2.0] * 4  # every pass, failed or not, was followed by one interval
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == ["loop flaky: step failed; the loop goes on at its next interval"] * 2
    assert all(r.exc_info and "pass" in str(r.exc_info[1]) for r in failures)


async def test_a_step_slower_than_its_interval_warns(caplog: pytest.LogCaptureFixture) -> None:
    clock, metrics = DrivenClock(), Metrics()
    loops = runner(clock, metrics)
    took = iter([0.5, 3.0])
    done = asyncio.Event()

    async def step() -> None:
        try:
            clock.now += next(took)
        except StopIteration:  # two passes done: wait here until stopped
            done.set()
            await asyncio.Event().wait()

    loops.start(Loop("slow", step, interval=1.0))
    await asyncio.wait_for(done.wait(), 5)
    await loops.stop()

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["loop slow: a step took 3.000s, longer than its 1s interval"]
    assert sample(metrics, "strata_loop_step_seconds_bucket", loop="slow", le="0.5") == 1
    assert sample(metrics, "strata_loop_step_seconds_bucket", loop="slow", le="5.0") == 2
    assert sample(metrics, "strata_loop_step_seconds_sum", loop="slow") == 3.5


class Died(BaseException):
    """Not an Exception: escapes the step wrapper and kills the task, as a bug in a loop's plumbing would."""


@pytest.mark.parametrize("error", [Died("boom"), asyncio.CancelledError()], ids=["base-exception", "stray-cancel"])
async def test_a_loop_whose_task_dies_is_restarted_and_counted(error: BaseException,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    clock, metrics = DrivenClock(), Metrics()
    loops = runner(clock, metrics)
    steps = Steps(fail={2}, block_at=4, error=error)
    loops.start(Loop("fragile", steps, interval=1.0, delay_first=True))
    await asyncio.wait_for(steps.blocked.wait(), 5)
    await loops.stop()

    assert sample(metrics, "strata_loop_restarts_total", loop="fragile") == 1
    assert sample(metrics, "strata_loop_errors_total", loop="fragile") == 0  # not a failed pass: a dead task
    # delay, pass 1, interval, pass 2 dies; restart delay, then the loop as new: delay, pass 3, interval, pass 4
    assert clock.slept == [1.0, 1.0, 5.0, 1.0, 1.0]
    assert any("loop fragile: its task died" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


async def test_a_one_shot_runs_once_and_a_name_runs_once() -> None:
    clock, metrics = DrivenClock(), Metrics()
    loops = runner(clock, metrics)
    steps = Steps(fail={1}, block_at=0)
    loops.start(Loop("start", steps, interval=0, once=True))
    with pytest.raises(ValueError, match="already running"):
        loops.start(Loop("start", steps, interval=0))
    await asyncio.wait_for(loops.tasks["start"], 5)
    assert steps.calls == 1 and clock.slept == []  # a failed one-shot is not retried, but it is counted
    assert sample(metrics, "strata_loop_errors_total", loop="start") == 1
    await loops.stop()


def _policies_table(db: Path, rename: tuple[str, str]) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(f"ALTER TABLE {rename[0]} RENAME TO {rename[1]}")


async def test_policy_sync_keeps_running_through_an_unreadable_table(upstream: FaultyUpstream,
                                                                    tmp_path: Path) -> None:
    """A real loop, a real fault: the policy table is gone for a while (as a database mid-migration would
    be); each pass fails, is counted in /metrics, and once the table is back a rule set by another replica
    applies here."""
    async with gateway(tmp_path, route(dep("a", upstream, model="ok")), keys={"sync_interval": 0.05}) as client:
        assert await metric(client, "strata_loop_errors_total", loop="policy-sync") == 0
        _policies_table(tmp_path / "strata.db", ("policies", "policies_away"))

        async def failed_passes() -> float:
            return await metric(client, "strata_loop_errors_total", loop="policy-sync") or 0

        await eventually(lambda: _at_least(failed_passes, 3), "three failed policy-sync passes in /metrics")
        _policies_table(tmp_path / "strata.db", ("policies_away", "policies"))
        other = PolicyStore(open_database(f"sqlite:///{tmp_path / 'strata.db'}"), [], [])
        other.set("limit", LimitRule(scope="route", subject="m", rpm=1), "another-replica")

        async def refused() -> bool:
            return (await chat(client)).status_code == 429

        await eventually(refused, "the other replica's limit applied here")
        assert await metric(client, "strata_loop_restarts_total", loop="policy-sync") == 0


async def _at_least(probe: object, n: float) -> bool:
    assert callable(probe)
    return bool(await probe() >= n)


async def test_engine_health_probes_run_concurrently(tmp_path: Path) -> None:
    """Two upstreams that each take 1 s to answer /v1/models: one health pass takes about 1 s, not 2."""
    with FaultyUpstream() as a, FaultyUpstream() as b:
        r = route(dep("a", a, model="ok"), dep("b", b, model="ok"))
        async with gateway(tmp_path, r, supervisor={"health_interval": 0.1}) as client:
            a.models_delay = b.models_delay = 1.0

            async def passes(le: str | None = None) -> float:
                name = "strata_loop_step_seconds_" + ("bucket" if le else "count")
                return await metric(client, name, loop="monitor-engines", **({"le": le} if le else {})) or 0

            before = {le: await passes(le) for le in (None, "1.0", "1.5")}
            await eventually(lambda: _at_least(passes, before[None] + 3), "three more health passes", timeout=20)
            after = {le: await passes(le) for le in (None, "1.0", "1.5")}
            new = after[None] - before[None]
            assert after["1.0"] - before["1.0"] < new  # the probes really were slow (a pass took over 1 s)...
            assert after["1.5"] - before["1.5"] == new  # ...and none took the 2 s of probing one after another
            view = await engines(client)
            assert view["a"]["ready"] and view["b"]["ready"]  # 1 s is within the probe timeout
