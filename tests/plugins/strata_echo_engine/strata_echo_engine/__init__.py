"""``echo``: a third-party Strata engine that answers chat and text completions with the prompt echoed back.

Everything a plugin needs: a pydantic config model whose ``type`` is the engine's name, an engine object
with the methods of ``strata.engines.base.Engine``, and an ``EngineSpec`` named by the ``strata.engines``
entry point in this package's pyproject.toml.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from strata.engines.base import EngineHealth, EngineSpec, Kind
from strata.engines.capabilities import Capabilities
from strata.errors import InvalidRequest


class EchoConfig(BaseModel):
    """``engine: {type: echo, prefix: "...", model: "..."}``; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["echo"]
    prefix: str = Field("echo: ", description="Put before the echoed text")
    model: str = Field("echo-1", min_length=1, description="The model name answers (and the ledger) carry")


class EchoEngine:
    engine_type = "echo"
    context_length: int | None = None
    capabilities = Capabilities(endpoints=frozenset({"chat", "completion"}), vision=False, audio=False, files=False,
                                json_schema=False, logprobs=False, max_n=1, native_n=False)

    def __init__(self, name: str, cfg: EchoConfig) -> None:
        self.name, self.model, self.prefix = name, cfg.model, cfg.prefix
        self.echoed = 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def health(self) -> EngineHealth:
        return EngineHealth(ready=True, state="ready", extra={"echoed": self.echoed})

    async def generate(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        text, usage = self._answer(kind, body)
        if kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        else:
            choice = {"index": 0, "text": text, "finish_reason": "stop"}
        return self._object(kind, [choice], usage)

    async def stream(self, kind: Kind, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        text, usage = self._answer(kind, body)
        pieces = [text[i:i + 4] for i in range(0, len(text), 4)]
        for i, piece in enumerate(pieces):
            last = "stop" if i == len(pieces) - 1 else None
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            choice = {"index": 0, "delta": delta} if kind == "chat" else {"index": 0, "text": piece}
            yield self._object(kind, [{**choice, "finish_reason": last}], None, chunk=True)
        yield self._object(kind, [], usage, chunk=True)  # the usage chunk (kept when the client asked for it)

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        raise InvalidRequest("the echo engine does not embed", param="model")

    def _answer(self, kind: Kind, body: dict[str, Any]) -> tuple[str, dict[str, int]]:
        if kind == "chat":
            users = [m for m in body["messages"] if m.get("role") == "user"] or [{"content": ""}]
            said = _text(users[-1].get("content"))
        else:
            said = _text(body.get("prompt"))
        self.echoed += 1
        text = self.prefix + said
        usage = {"prompt_tokens": len(said.split()), "completion_tokens": len(text.split())}
        return text, {**usage, "total_tokens": sum(usage.values())}

    def _object(self, kind: Kind, choices: list[dict[str, Any]], usage: dict[str, int] | None,
                chunk: bool = False) -> dict[str, Any]:
        obj = "text_completion" if kind == "completion" else "chat.completion.chunk" if chunk else "chat.completion"
        out: dict[str, Any] = {"id": f"echo-{uuid.uuid4().hex[:12]}", "object": obj, "created": int(time.time()),
                               "model": self.model, "choices": choices}
        if usage is not None:
            out["usage"] = usage
        return out


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def build(name: str, cfg: EchoConfig, **common: Any) -> EchoEngine:
    return EchoEngine(name, cfg)


ENGINE = EngineSpec(config=EchoConfig, build=build)
