"""Local engines: a supervised worker process that speaks the OpenAI protocol on loopback.

The gateway side is an ``HttpEngine`` pointed at the worker, plus a supervisor. CPU-heavy work (model
load, decoding, embedding) happens in the worker, so it never blocks the gateway's event loop, a crash
never takes the gateway down, and the gateway process stays small.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from strata.engines.artifacts import require_module, resolve_artifact
from strata.engines.base import EngineHealth, Kind
from strata.engines.capabilities import PERMISSIVE, Capabilities
from strata.engines.config import LlamaCppEngineConfig, SentenceTransformersEngineConfig, SupervisorSettings
from strata.engines.fanout import per_prompt
from strata.engines.http import HttpEngine, map_client_errors
from strata.engines.kv_budget import KvBudget, output_limit, prompt_bound
from strata.engines.llamacpp_logprobs import prompts, requested, rewrite, rewrite_stream, upstream_body
from strata.engines.llamacpp_tools import (
    as_tool_call,
    constrained,
    forced_tools,
    stream_tool_call,
    stream_with_ids,
    with_ids,
)
from strata.engines.supervisor import WorkerSupervisor
from strata.engines.templates import chat_template
from strata.errors import UpstreamUnavailable

log = logging.getLogger(__name__)


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
        capabilities: Capabilities = PERMISSIVE,
    ) -> None:
        port = free_port()
        super().__init__(name, f"http://127.0.0.1:{port}/v1", model, read_timeout=600,
                         context_length=context_length, capabilities=capabilities)
        self._discovered: int | None = None  # the worker pid whose capabilities are known
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
        ready = sup.ready.is_set()
        if ready and sup.pid != self._discovered:
            try:
                self.capabilities = await self.discover()
                self._discovered = sup.pid
            except (aiohttp.ClientError, TimeoutError, KeyError, TypeError, ValueError) as exc:
                log.warning("engine %s: cannot read its capabilities yet: %s", self.name, exc)
        return EngineHealth(ready=ready, state=sup.state, detail=sup.last_error, restarts=sup.restarts,
                            extra={"pid": sup.pid, "url": self.base_url, "capabilities": self.capabilities.summary()})

    async def discover(self) -> Capabilities:
        """What the running worker says it can do (once per worker process)."""
        return self.capabilities

    async def _get(self, path: str) -> Any:
        async with self.session.get(f"http://127.0.0.1:{self.port}{path}",
                                    timeout=aiohttp.ClientTimeout(total=2)) as r:
            r.raise_for_status()
            return await r.json()

    async def close(self) -> None:
        await self.supervisor.stop()
        await super().close()


class LlamaCppEngine(LocalEngine):
    """llama.cpp with continuous batching across ``n_parallel`` slots; reports busy slots and queue depth.

    Capabilities come from the loaded model (``/props``): tools when its chat template describes them,
    vision/audio only with a multimodal projector (never configured here). ``n > 1`` is fanned out into
    parallel calls, because llama.cpp's own ``n`` reports the usage of one choice only (measured); so are
    a text completion's prompts (see ``_calls``).
    """

    close_after_stream = True
    kv: KvBudget | None = None  # the unified KV cache's admission (see ``kv_budget``)
    default_output = 1024  # KV tokens held for a request without max_tokens

    async def discover(self) -> Capabilities:
        props = await self._get("/props")
        template = props.get("chat_template_caps") or {}
        media = props.get("modalities") or {}
        return replace(self.capabilities, tools=bool(template.get("supports_tools")),
                       vision=bool(media.get("vision")), audio=bool(media.get("audio")))

    def _calls(self, kind: Kind, body: dict[str, Any]) -> list[dict[str, Any]]:
        """One call per prompt of a text completion too (prompt ``p``'s sample ``j`` is choice ``p * n + j``).
        With several prompts llama.cpp's JSON answer counts one prompt's usage, and its stream is a shape
        of its own: a leading ``data: null``, then the prompts' chunks interleaved, each prompt's last one
        with that prompt's usage and timings (measured on xllamacpp). Single-prompt calls also keep the
        logprobs rewrite's ``text_offset`` per prompt and the KV budget's holds per call."""
        calls = super()._calls(kind, body)
        if kind == "completion" and len(texts := prompts(body)) > 1:
            return per_prompt(calls, texts)
        return calls

    def _bounded(self, body: dict[str, Any]) -> dict[str, Any]:
        """With a shared KV cache, an answer without ``max_tokens`` is limited to ``n_ctx / n_parallel``."""
        if self.kv is None or output_limit(body) is not None:
            return body
        return {**body, "max_tokens": self.default_output}

    def _hold(self, body: dict[str, Any]) -> contextlib.AbstractAsyncContextManager[None]:
        if self.kv is None:
            return contextlib.nullcontext()
        return self.kv.hold(prompt_bound(body) + (output_limit(body) or self.default_output))

    async def generate_one(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        body = self._bounded(body)
        async with self._hold(body):
            if kind == "chat" and body.get("tools"):
                if (forced := forced_tools(body)) is not None:
                    return as_tool_call(await super().generate_one(kind, constrained(body, forced)))
                return with_ids(await super().generate_one(kind, body))
            if kind == "completion" and (n := requested(body)) is not None:
                starts = await self._prompt_lengths(body)
                return rewrite(await super().generate_one(kind, upstream_body(body)), n, starts)
            return await super().generate_one(kind, body)

    def stream_one(self, kind: Kind, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        body = self._bounded(body)
        if kind == "chat" and body.get("tools"):
            if (forced := forced_tools(body)) is not None:
                return self._held(stream_tool_call(super().stream_one(kind, constrained(body, forced))), body)
            return self._held(stream_with_ids(super().stream_one(kind, body)), body)
        if kind == "completion" and (n := requested(body)) is not None:
            chunks = rewrite_stream(super().stream_one(kind, upstream_body(body)), n,
                                    lambda: self._prompt_lengths(body))
            return self._held(chunks, body)
        return self._held(super().stream_one(kind, body), body)

    async def _held(self, chunks: AsyncIterator[dict[str, Any]], body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            async with self._hold(body):
                async for chunk in chunks:
                    yield chunk
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

    async def _prompt_lengths(self, body: dict[str, Any]) -> list[int]:
        """Each prompt's length in characters (where legacy ``text_offset`` starts); token ids are
        detokenized by the worker."""
        return [len(p) if isinstance(p, str) else len(await self._detokenize(p)) for p in prompts(body)]

    async def _detokenize(self, tokens: list[int]) -> str:
        with map_client_errors(self.name):
            async with self.session.post(f"http://127.0.0.1:{self.port}/detokenize", json={"tokens": tokens},
                                         timeout=aiohttp.ClientTimeout(total=10)) as r:
                r.raise_for_status()
                return str((await r.json())["content"])

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
        h.queue_depth += self.kv.waiting if self.kv is not None else 0  # waiting for room in the KV cache
        return h


def _prom_value(text: str, metric: str) -> float:
    for line in text.splitlines():
        if line.startswith(metric + " "):
            return float(line.split()[1])
    return 0.0


class EmbeddingsEngine(LocalEngine):
    """sentence-transformers: its native embedding size, and whether ``dimensions`` may shorten it."""

    async def discover(self) -> Capabilities:
        model = (await self._get("/v1/models"))["data"][0]
        return replace(self.capabilities, embedding_size=int(model["dimensions"]),
                       dimensions=bool(model.get("matryoshka")))


def llamacpp_engine(name: str, cfg: LlamaCppEngineConfig, **common: Any) -> LlamaCppEngine:
    require_module("xllamacpp", name)
    path = resolve_artifact(cfg.model, name)
    template = chat_template(cfg.chat_template, cfg.model, name)
    spec = {"model": str(path), "n_parallel": cfg.n_parallel, "n_ctx": cfg.n_ctx, "kv_unified": cfg.kv_unified,
            "threads": cfg.threads, "n_batch": cfg.n_batch, "chat_template": template}
    # until the worker reports its own: what llama.cpp always can, and tools only with a tool template
    caps = Capabilities(endpoints=frozenset({"chat", "completion"}), tools=template is not None, functions=False,
                        vision=False, audio=False, audio_output=False, files=False, max_n=cfg.n_parallel,
                        native_n=False, echo=False, suffix=False, best_of=False)
    engine = LlamaCppEngine(name, "llamacpp", cfg.model, spec, startup_timeout=cfg.startup_timeout,
                            context_length=cfg.slot_context, capabilities=caps, **common)
    if cfg.kv_unified:
        engine.kv, engine.default_output = KvBudget(cfg.n_ctx), max(cfg.n_ctx // cfg.n_parallel, 1)
    return engine


def sentence_transformers_engine(name: str, cfg: SentenceTransformersEngineConfig, **common: Any) -> LocalEngine:
    require_module("sentence_transformers", name)
    path = resolve_artifact(cfg.model, name)
    spec = {"model": str(path), "device": cfg.device, "threads": cfg.threads, "batch_size": cfg.batch_size,
            "matryoshka": cfg.matryoshka}
    caps = Capabilities(endpoints=frozenset({"embeddings"}), tools=False, functions=False, vision=False,
                        audio=False, audio_output=False, files=False, json_schema=False, logprobs=False, max_n=1,
                        dimensions=cfg.matryoshka)
    return EmbeddingsEngine(name, "sentence-transformers", cfg.model, spec, startup_timeout=cfg.startup_timeout,
                            capabilities=caps, **common)
