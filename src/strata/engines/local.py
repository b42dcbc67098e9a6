"""Local engines: a supervised worker process that speaks the OpenAI protocol on loopback.

The gateway side is an ``HttpEngine`` pointed at the worker, plus a supervisor. CPU-heavy work (model
load, decoding, embedding) happens in the worker, so it never blocks the gateway's event loop, a crash
never takes the gateway down, and the gateway process stays small.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from strata.config.engines import LlamaCppEngineConfig, SentenceTransformersEngineConfig
from strata.config.settings import SupervisorSettings
from strata.engines.artifacts import require_module, resolve_artifact
from strata.engines.base import EngineHealth, Kind
from strata.engines.http import HttpEngine
from strata.engines.supervisor import WorkerSupervisor
from strata.errors import UpstreamUnavailable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalEngine(HttpEngine):
    """An HttpEngine whose upstream is a worker process this gateway supervises."""

    def __init__(
        self,
        name: str,
        engine_type: str,
        model: str,
        worker_spec: dict[str, Any],
        *,
        startup_timeout: float,
        wait_timeout: float,
        supervisor: SupervisorSettings,
        log_dir: Path,
        context_length: int | None = None,
    ) -> None:
        port = free_port()
        super().__init__(name, f"http://127.0.0.1:{port}/v1", model, read_timeout=600,
                         context_length=context_length)
        self.engine_type = engine_type
        self.port = port
        self.wait_timeout = wait_timeout
        argv = [sys.executable, "-m", "strata.engines.worker", engine_type, "--port", str(port),
                "--spec", orjson.dumps(worker_spec).decode()]
        self.supervisor = WorkerSupervisor(
            name, argv, f"http://127.0.0.1:{port}/health", supervisor, startup_timeout, log_dir / f"{name}.log"
        )

    async def start(self) -> None:
        await super().start()
        self.supervisor.start()

    async def _ready(self) -> None:
        if self.supervisor.ready.is_set():
            return
        if not await self.supervisor.wait_ready(self.wait_timeout):
            detail = self.supervisor.last_error or self.supervisor.state
            raise UpstreamUnavailable(f"engine {self.name} is not ready ({detail})", retry_after=1.0)

    async def generate(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        await self._ready()
        return await super().generate(kind, body)

    async def stream(self, kind: Kind, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        await self._ready()
        async for chunk in super().stream(kind, body):
            yield chunk

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        await self._ready()
        return await super().embed(body)

    async def health(self) -> EngineHealth:
        sup = self.supervisor
        return EngineHealth(ready=sup.ready.is_set(), state=sup.state, detail=sup.last_error,
                            restarts=sup.restarts, extra={"pid": sup.pid, "url": self.base_url})

    async def close(self) -> None:
        await self.supervisor.stop()
        await super().close()


class LlamaCppEngine(LocalEngine):
    """llama.cpp with continuous batching across ``n_parallel`` slots; reports busy slots and queue depth."""

    close_after_stream = True

    async def health(self) -> EngineHealth:
        h = await super().health()
        if h.ready:
            try:
                async with self.session.get(f"http://127.0.0.1:{self.port}/metrics",
                                            timeout=aiohttp.ClientTimeout(total=1)) as r:
                    text = await r.text()
                h.busy_slots = int(_prom_value(text, "llamacpp:requests_processing"))
                h.queue_depth = int(_prom_value(text, "llamacpp:requests_deferred"))
            except (aiohttp.ClientError, TimeoutError):
                pass
        return h


def _prom_value(text: str, metric: str) -> float:
    for line in text.splitlines():
        if line.startswith(metric + " "):
            return float(line.split()[1])
    return 0.0


def llamacpp_engine(name: str, cfg: LlamaCppEngineConfig, **common: Any) -> LlamaCppEngine:
    require_module("xllamacpp", name)
    path = resolve_artifact(cfg.model, name)
    spec = {"model": str(path), "n_parallel": cfg.n_parallel, "n_ctx": cfg.n_ctx,
            "threads": cfg.threads, "n_batch": cfg.n_batch}
    return LlamaCppEngine(name, "llamacpp", cfg.model, spec, startup_timeout=cfg.startup_timeout,
                          context_length=cfg.slot_context, **common)


def sentence_transformers_engine(name: str, cfg: SentenceTransformersEngineConfig, **common: Any) -> LocalEngine:
    require_module("sentence_transformers", name)
    path = resolve_artifact(cfg.model, name)
    spec = {"model": str(path), "device": cfg.device, "threads": cfg.threads, "batch_size": cfg.batch_size}
    return LocalEngine(name, "sentence-transformers", cfg.model, spec, startup_timeout=cfg.startup_timeout,
                       **common)
