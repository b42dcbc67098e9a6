"""The configured backend behind the policy for an unreachable Redis.

When a Redis call fails (or takes longer than ``state.timeout``) the backend is marked down for
``state.retry_interval`` seconds, logged once, and shown in ``strata_state_backend_up``. Meanwhile:

- ``fail-open``: this replica counts on its own (the in-process backend): limits and budgets still hold
  per replica, not across replicas;
- ``fail-closed``: requests that need shared state get 503 ``state_unavailable``.

The first call after the interval tries Redis again; when it answers, shared counting resumes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import RedisError

from strata.errors import UpstreamUnavailable
from strata.observe.metrics import Metrics
from strata.state.base import StateBackend
from strata.state.config import StateSettings
from strata.state.memory import MemoryBackend
from strata.state.redis import RedisBackend

log = logging.getLogger(__name__)
T = TypeVar("T")


class SharedState:
    def __init__(self, cfg: StateSettings, metrics: Metrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.local = MemoryBackend()
        self.remote: StateBackend | None = RedisBackend(cfg.redis_url, cfg.timeout) if cfg.backend == "redis" else None
        self.down_until = 0.0
        self.epoch = 0  # moves when Redis comes back after an outage
        self.prefix = cfg.key_prefix
        metrics.state_up.set(1)

    @property
    def shared(self) -> bool:
        return self.remote is not None and time.monotonic() >= self.down_until

    async def run(self, op: Callable[[StateBackend], Awaitable[T]]) -> T:
        if self.remote is not None and time.monotonic() >= self.down_until:
            try:
                async with asyncio.timeout(self.cfg.timeout * 4):  # no extra task, unlike wait_for
                    result = await op(self.remote)
            except (RedisError, OSError, TimeoutError) as exc:
                self._down(exc)
            else:
                if self.down_until:
                    self.down_until = 0.0
                    self.epoch += 1  # spend counted locally meanwhile: budgets catch up from the ledger
                    self.metrics.state_up.set(1)
                    log.warning("shared state: Redis is back; counting across replicas again")
                return result
        if self.remote is not None and self.cfg.on_unavailable == "fail-closed":
            raise UpstreamUnavailable("Shared state (Redis) is unavailable; try again shortly.",
                                      code="state_unavailable", retry_after=self.cfg.retry_interval)
        return await op(self.local)

    async def probe(self) -> None:
        """After an outage, learn whether Redis is back before counting on it (so budgets catch up first)."""
        if self.remote is not None and self.down_until and time.monotonic() >= self.down_until:
            await self.run(lambda b: b.ping())

    def _down(self, exc: BaseException) -> None:
        first = self.down_until == 0.0
        self.down_until = time.monotonic() + self.cfg.retry_interval
        self.metrics.state_up.set(0)
        self.metrics.state_errors.inc()
        if first:
            log.error("shared state: Redis unreachable (%s); %s", exc or type(exc).__name__,
                      "serving on this replica's own counters (fail-open)" if self.cfg.on_unavailable == "fail-open"
                      else "refusing requests that need it (fail-closed)")

    def key(self, *parts: Any) -> str:
        return ":".join([self.prefix, *(str(p) for p in parts)])

    async def close(self) -> None:
        if self.remote is not None:
            await self.remote.close()
