"""Context window management: fit a long conversation into the prompt budget before it reaches an engine.

Token counts are the gateway's estimate (``estimate_prompt_tokens``: four characters a token plus chat
formatting) with a 10% safety margin, so the engine's own count stays inside its window. The system
prompt and the last user turn are never dropped; when even they do not fit, the request gets a clear 400
``context_length_exceeded`` instead of an engine error.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from strata.errors import InvalidRequest
from strata.pipeline.record import estimate_prompt_tokens
from strata.routing.config import ContextConfig, RouteConfig

log = logging.getLogger(__name__)
MARGIN = 1.1
Summarize = Callable[[list[dict[str, Any]]], Awaitable[str]]


@dataclass(slots=True)
class Fitted:
    messages: list[dict[str, Any]]
    dropped: int
    summarized: bool
    tokens: int

    def header(self) -> str:
        return f"dropped={self.dropped}; summarized={'yes' if self.summarized else 'no'}; prompt_tokens~{self.tokens}"


def tokens(messages: list[dict[str, Any]]) -> int:
    return int(estimate_prompt_tokens({"messages": messages}) * MARGIN)


def budget(cfg: ContextConfig, route: RouteConfig, window: Callable[[str], int | None],
           output_limit: int | None) -> int | None:
    windows = [w for d in route.deployments if d.role in ("primary", "canary", "fallback")
               and (w := window(d.name)) is not None]
    fit = min(windows) - (output_limit or 0) if windows else None
    if cfg.max_prompt_tokens is not None:
        return min(cfg.max_prompt_tokens, fit) if fit is not None else cfg.max_prompt_tokens
    return fit


async def fit(cfg: ContextConfig, messages: list[dict[str, Any]], limit: int,
              summarize: Summarize | None) -> Fitted | None:
    """The conversation within ``limit`` tokens, or None when it already fits."""
    if tokens(messages) <= limit:
        return None
    system = [m for m in messages if m.get("role") in ("system", "developer")]
    turns = [m for m in messages if m.get("role") not in ("system", "developer")]
    kept = turns[-cfg.keep_last:]
    while len(kept) > 1 and tokens(system + kept) > limit:
        kept = kept[1:]
    while kept and kept[0].get("role") == "tool":  # a tool result without the call that asked for it
        kept = kept[1:]
    if not kept or tokens(system + kept) > limit:
        raise InvalidRequest(f"This conversation needs about {tokens(system + turns[-1:])} tokens even with only "
                             f"the system prompt and the last message; this model's prompt budget is {limit}.",
                             param="messages", code="context_length_exceeded")
    dropped = turns[:len(turns) - len(kept)]
    summarized = False
    if cfg.policy == "summarize" and summarize is not None and dropped:
        try:
            text = await summarize(dropped)
            note = {"role": "system", "content": f"Summary of the earlier conversation: {text}"}
            if tokens(system + [note] + kept) <= limit:
                system, summarized = system + [note], True
        except Exception as exc:  # no summary: the turns are dropped as with truncate
            log.warning("context summary failed (%s); truncating instead", exc)
    out = system + kept
    return Fitted(out, len(dropped), summarized, tokens(out))
