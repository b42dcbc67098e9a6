"""Supervising a local engine worker process: start, health-check, restart with backoff, stop.

A reconcile loop: each pass makes the actual state (a live, healthy process) match the wanted state
(running), and every transition is logged. Workers run in their own session so a Ctrl-C on the
terminal reaches the gateway first; the gateway drains, then stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from strata.engines.config import SupervisorSettings

log = logging.getLogger(__name__)


class WorkerSupervisor:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        health_url: str,
        settings: SupervisorSettings,
        startup_timeout: float,
        log_path: Path,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.health_url = health_url
        self.settings = settings
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self.state = "stopped"
        self.restarts = 0
        self.last_error = ""
        self.ready = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        if self._task is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
            self._task = asyncio.create_task(self._run(), name=f"supervise-{self.name}")

    async def wait_ready(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), timeout)
        return self.ready.is_set()

    async def _run(self) -> None:
        backoff = self.settings.backoff_initial
        while True:
            started = time.monotonic()
            await self._spawn()
            if await self._wait_healthy():
                self._set("ready")
                await self._watch()
            self.ready.clear()
            if time.monotonic() - started > 60:
                backoff = self.settings.backoff_initial
            self.restarts += 1
            self._set("restarting", f"restart #{self.restarts} in {backoff:.1f}s: {self.last_error}")
            await self._kill()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.backoff_max)

    async def _spawn(self) -> None:
        self._set("starting")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        log.info("engine %s: worker started (pid %s)", self.name, self.proc.pid)

    async def _wait_healthy(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.returncode is not None:
                self.last_error = f"worker exited with code {self.proc.returncode if self.proc else '?'}"
                self.last_error += f" during startup (see {self.log_path})"
                return False
            if await self._probe():
                return True
            await asyncio.sleep(0.05)
        self.last_error = f"not healthy within {self.startup_timeout:.0f}s (see {self.log_path})"
        return False

    async def _watch(self) -> None:
        """Wait for the process to die or fail three health checks in a row."""
        assert self.proc is not None
        failures = 0
        exited = asyncio.create_task(self.proc.wait())
        try:
            while failures < 3:
                done, _ = await asyncio.wait({exited}, timeout=self.settings.health_interval)
                if done:
                    self.last_error = f"worker exited with code {self.proc.returncode}"
                    return
                failures = 0 if await self._probe() else failures + 1
            self.last_error = "worker failed 3 health checks"
        finally:
            exited.cancel()

    async def _probe(self) -> bool:
        assert self._http is not None
        try:
            async with self._http.get(self.health_url) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    def _set(self, state: str, detail: str = "") -> None:
        self.state = state
        if state == "ready":
            self.ready.set()
        log.log(logging.WARNING if state == "restarting" else logging.INFO,
                "engine %s: %s%s", self.name, state, f" ({detail})" if detail else "")

    async def _kill(self, grace: float = 5.0) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._kill()
        self.ready.clear()
        self.state = "stopped"
        if self._http is not None:
            await self._http.close()
            self._http = None
