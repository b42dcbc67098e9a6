"""Stage ``admit``: may this caller send this request now? The route's prompt size limits (400 naming the
setting), the caller throttle (a key whose requests keep failing upstream while others are served, see
``routing.outlier``), the key's concurrency cap (``governance.abuse``), rate limits and budgets
(``governance.governor``); refusals are 429s naming the limit. Cheap, and before any stage that calls an
engine of its own (the cache's embeddings, the context's summary, the route's complexity score).

The prompt is estimated at the most the route's context policy lets through; the real usage settles the
counters on the way out.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import Response

from strata.errors import InvalidRequest, RateLimited
from strata.pipeline.flow import Flow
from strata.pipeline.record import estimate_prompt_tokens
from strata.pipeline.stage import Stage
from strata.routing.config import RouteConfig


class Admit(Stage):
    name = "strata.admit"

    async def before(self, flow: Flow) -> Response | None:
        state, call, route = flow.state, flow.call, flow.route
        assert route is not None and call.principal is not None and flow.body is not None
        check_prompt_size(route, flow.body)
        if (wait := state.governance.callers.retry_after(route.name, call.principal.key_id)) > 0:
            state.observe.metrics.limited.labels("key", "upstream_failures").inc()
            raise RateLimited(f"Requests from this key to '{route.name}' keep failing upstream while other "
                              f"callers' are served; retry in {wait:.0f}s.", code="caller_failing", retry_after=wait)
        if (cap := call.principal.max_concurrency) is not None:
            try:
                state.governance.caps.acquire(call.principal.key_id, cap)
            except RateLimited:
                state.observe.metrics.limited.labels("key", "concurrency").inc()
                raise
            flow.held = call.principal.key_id
        if state.governance.governor.active:
            await self._govern(flow)
        state.observe.metrics.in_flight.labels(route.name).inc()
        call.admitted = True
        return None

    async def _govern(self, flow: Flow) -> None:
        state, call, route, body = flow.state, flow.call, flow.route, flow.body
        assert route is not None and call.principal is not None and body is not None
        prompt = estimate_prompt_tokens(body)
        if flow.prompt_limit is not None and prompt > flow.prompt_limit:
            prompt = flow.prompt_limit
        admission, reservation = await state.governance.governor.admit(call.principal, route, call.tags, prompt,
                                                                       getattr(flow.req, "output_limit", None),
                                                            state.routing.context_window)
        call.governed = (admission, reservation)
        if admission is not None:
            call.headers = admission.headers

    def after(self, flow: Flow) -> None:
        """Settle the limits and the budget with the real usage and cost (``account`` ran just before)."""
        state, call = flow.state, flow.call
        if flow.held is not None:  # on every path: answered, refused later, failed, stream ended, client gone
            state.governance.caps.release(flow.held)
            flow.held = None
        if call.governed is None:
            return
        admission, reservation = call.governed
        pending = state.governance.governor.settle_inline(admission, reservation, call.prompt_tokens,
                                                          call.completion_tokens, call.cost)
        if pending is not None:  # shared counters (Redis) or an alert to send: in the background
            task = asyncio.create_task(pending)
            state.governance.settling.add(task)
            task.add_done_callback(state.governance.settling.discard)


def check_prompt_size(route: RouteConfig, body: dict[str, Any]) -> None:
    """The route's ``max_input_chars`` and ``max_prompt_tokens``: a 400 naming the setting, before any engine
    (or embedding, summary, guard) sees the prompt."""
    if route.max_input_chars is None and route.max_prompt_tokens is None:
        return
    field = next((f for f in ("messages", "prompt", "input") if f in body), "messages")
    if route.max_input_chars is not None and (chars := input_chars(body)) > route.max_input_chars:
        raise InvalidRequest(f"The {field} hold {chars} characters; route '{route.name}' takes at most "
                             f"{route.max_input_chars} (max_input_chars).", param=field, code="input_too_large")
    if route.max_prompt_tokens is not None and (tokens := estimate_prompt_tokens(body)) > route.max_prompt_tokens:
        raise InvalidRequest(f"The prompt is about {tokens} tokens; route '{route.name}' takes at most "
                             f"{route.max_prompt_tokens} (max_prompt_tokens).", param=field, code="prompt_too_large")


def input_chars(body: dict[str, Any]) -> int:
    """Characters of text in the messages (text parts), prompt(s) or input(s)."""
    return _chars(body.get("messages") if "messages" in body else body.get("prompt", body.get("input")))


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_chars(v) for v in value)
    if isinstance(value, dict):
        return _chars(value.get("content")) + _chars(value.get("text"))
    return 0
