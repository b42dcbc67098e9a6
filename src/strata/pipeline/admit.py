"""Stage ``admit``: may this caller send this request now? The caller throttle (a key whose requests keep
failing upstream while others are served, see ``routing.outlier``), rate limits and budgets
(``governance.governor``); refusals are 429s naming the limit. Cheap, and before any stage that calls an
engine of its own (the cache's embeddings, the context's summary, the route's complexity score).

The prompt is estimated at the most the route's context policy lets through; the real usage settles the
counters on the way out.
"""

from __future__ import annotations

import asyncio

from starlette.responses import Response

from strata.errors import RateLimited
from strata.pipeline.flow import Flow
from strata.pipeline.record import estimate_prompt_tokens
from strata.pipeline.stage import Stage


class Admit(Stage):
    name = "strata.admit"

    async def before(self, flow: Flow) -> Response | None:
        state, call, route = flow.state, flow.call, flow.route
        assert route is not None and call.principal is not None and flow.body is not None
        if (wait := state.callers.retry_after(route.name, call.principal.key_id)) > 0:
            state.metrics.limited.labels("key", "upstream_failures").inc()
            raise RateLimited(f"Requests from this key to '{route.name}' keep failing upstream while other "
                              f"callers' are served; retry in {wait:.0f}s.", code="caller_failing", retry_after=wait)
        if state.governor.active:
            await self._govern(flow)
        state.metrics.in_flight.labels(route.name).inc()
        call.admitted = True
        return None

    async def _govern(self, flow: Flow) -> None:
        state, call, route, body = flow.state, flow.call, flow.route, flow.body
        assert route is not None and call.principal is not None and body is not None
        prompt = estimate_prompt_tokens(body)
        if flow.prompt_limit is not None and prompt > flow.prompt_limit:
            prompt = flow.prompt_limit
        admission, reservation = await state.governor.admit(call.principal, route, call.tags, prompt,
                                                            getattr(flow.req, "output_limit", None),
                                                            state.context_window)
        call.governed = (admission, reservation)
        if admission is not None:
            call.headers = admission.headers

    def after(self, flow: Flow) -> None:
        """Settle the limits and the budget with the real usage and cost (``account`` ran just before)."""
        state, call = flow.state, flow.call
        if call.governed is None:
            return
        admission, reservation = call.governed
        pending = state.governor.settle_inline(admission, reservation, call.prompt_tokens, call.completion_tokens,
                                               call.cost)
        if pending is not None:  # shared counters (Redis) or an alert to send: in the background
            task = asyncio.create_task(pending)
            state.settling.add(task)
            task.add_done_callback(state.settling.discard)
