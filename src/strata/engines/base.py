"""The engine protocol: the one small interface every model backend implements, built-in or third-party.

An engine takes an OpenAI-shaped request body (already validated by the gateway, with ``model`` set to
the engine's own model name) and returns an OpenAI-shaped response object, or an async generator of
OpenAI-shaped chunks. Engine quirks stay inside the engine's adapter. Failures are raised as
``strata.errors`` (``UpstreamError`` and its subclasses are retried and count against the deployment's
breaker; ``InvalidRequest`` is the caller's fault). docs/engines.md shows a complete third-party engine.

An engine type is registered (``strata.engines.registry``) as an ``EngineSpec``: its pydantic config
model (with a ``type: Literal["name"]`` field; a deployment's ``engine:`` section is validated against
it) and ``build(name, cfg, **common) -> Engine``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict

from pydantic import BaseModel

if TYPE_CHECKING:
    from strata.engines.config import SupervisorSettings

Kind = Literal["chat", "completion"]


@dataclass(slots=True)
class EngineHealth:
    ready: bool
    state: str
    detail: str = ""
    busy_slots: int = 0
    queue_depth: int = 0
    restarts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    """What the gateway calls. ``capabilities`` (``engines.capabilities.Capabilities``) is optional: an
    engine without it is taken to handle every request option (tools, vision, ``n``...)."""

    name: str  # the deployment's name
    engine_type: str  # the registered type, e.g. "llamacpp"; in the ledger's engine column
    model: str  # the model name the engine serves; in the ledger and in the body it gets

    async def start(self) -> None: ...

    async def generate(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]: ...

    def stream(self, kind: Kind, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """An async generator (the gateway ``aclose()``s it when the client goes away)."""
        ...

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]: ...

    async def health(self) -> EngineHealth: ...

    async def close(self) -> None: ...

    @property
    def context_length(self) -> int | None: ...


class Common(TypedDict):
    """The keyword arguments every ``build`` gets; an engine takes the ones it needs (``**common``)."""

    wait_timeout: float  # server.engine_wait_timeout: how long a request may wait for a starting engine
    supervisor: SupervisorSettings  # restart policy for engines that run worker processes
    log_dir: Path  # <data_dir>/logs, for worker logs


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """One engine type: its config model and its factory. What a ``strata.engines`` entry point names."""

    config: type[BaseModel]
    build: Callable[..., Engine]  # build(deployment_name, config_instance, **common) -> Engine
