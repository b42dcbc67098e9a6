"""The engine protocol: the one small interface every model backend implements.

An engine takes an OpenAI-shaped request body (already validated by the gateway, with ``model`` set to
the engine's own model name) and returns an OpenAI-shaped response object, or an async iterator of
OpenAI-shaped chunks. Engine quirks stay inside the engine's adapter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

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
    name: str
    engine_type: str
    model: str

    async def start(self) -> None: ...

    async def generate(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]: ...

    def stream(self, kind: Kind, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]: ...

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]: ...

    async def health(self) -> EngineHealth: ...

    async def close(self) -> None: ...

    @property
    def context_length(self) -> int | None: ...
