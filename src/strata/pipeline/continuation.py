"""Continue a broken stream (a route's ``continue_streams``): when the upstream dies mid-answer, the same
request goes on on another deployment (a primary not yet tried, then the fallbacks), from the text streamed
so far, and the relay splices the continuation into the client's stream.

Chat: the text so far is sent as a final assistant message (llama.cpp, the bundled xllamacpp included,
prefills a trailing assistant message by default; vLLM's ``continue_final_message`` is not sent, since
OpenAI itself rejects unknown fields). Text completions: the prompt plus the text so
far is the natural continuation. The stream says it was continued (see ``Relay``); when no deployment can
continue it, the stream ends with the error event of the broken attempt, as without the option.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

from strata.engines.base import Kind
from strata.errors import StrataError
from strata.gateway.state import AppState
from strata.pipeline.attempt import call_engine, end, judge
from strata.pipeline.record import CallRecord
from strata.routing.router import Attempts, Target

Opened = tuple[Target, AsyncIterator[dict[str, Any]], dict[str, Any] | None, float]


class Continuation:
    """What a broken stream needs to go on elsewhere: the request as first sent, and its attempt plan."""

    __slots__ = ("kind", "req", "body", "attempts")

    def __init__(self, kind: Kind, req: Any, body: dict[str, Any], attempts: Attempts) -> None:
        self.kind, self.req, self.body, self.attempts = kind, req, dict(body), attempts

    @classmethod
    def of(cls, kind: Kind, req: Any, body: dict[str, Any], attempts: Attempts) -> Continuation | None:
        """The continuation of this stream, if its route asks for one and the request can be continued
        (one choice; a text completion with one string prompt)."""
        if not attempts.route.continue_streams or (body.get("n") or 1) > 1:
            return None
        if kind == "completion" and not isinstance(body.get("prompt"), str):
            return None
        return cls(kind, req, body, attempts)

    def body_after(self, text: str, delivered: int) -> dict[str, Any]:
        """The request that continues ``text`` (``delivered`` tokens are already spent of the output limit)."""
        body = dict(self.body)
        if self.kind == "chat" and text:
            body["messages"] = [*self.body["messages"], {"role": "assistant", "content": text}]
        else:
            body["prompt"] = self.body["prompt"] + text
        for limit in ("max_tokens", "max_completion_tokens"):
            if body.get(limit):
                body[limit] = max(1, int(body[limit]) - delivered)
        return body

    async def resume(self, state: AppState, call: CallRecord, broken: Target, started: float, exc: StrataError,
                     text: str) -> Opened | None:
        """End the broken attempt, then open the continuation on the next deployment that answers; None
        when none does (their attempts are in the ledger row; the stream ends with ``exc``)."""
        end(state, call, broken, started, exc, judged=False)
        call.attempts[-1]["broken_after_chars"] = len(text)
        body = self.body_after(text, call.chunks)
        untried = sum(1 for d in self.attempts.route.deployments
                      if d.role == "primary" and d.name not in self.attempts.tried)
        route = self.attempts.route.model_copy(update={"deadline": None})  # the deadline was for the first byte
        attempts = dataclasses.replace(self.attempts, route=route, primary_left=untried)
        kind = self.kind
        try:
            target, (chunks, first, opened) = await call_engine(state, call, self.req, body, attempts,
                                                                lambda t: _open(t, kind, body))
        except StrataError:
            judge(state, call, [broken], served=False)
            return None
        judge(state, call, [broken], served=True)
        return target, chunks, first, opened


async def _open(target: Target, kind: Kind, body: dict[str, Any]) -> tuple[Any, Any, float]:
    started = time.perf_counter()
    chunks = aiter(target.engine.stream(kind, body))
    return chunks, await anext(chunks, None), started
