"""Stage ``drift``: observe a sample of requests for drift detection (``strata.observe.drift``).

``before`` flips the route's coin and, for a sampled request, has the answer's text collected; ``after``
hands the observation to the drift monitor, which embeds and stores it in the background. Nothing here
waits: the client never pays for drift. With drift off (``state.observe.drift`` is None) both are a no-op.
"""

from __future__ import annotations

from starlette.responses import Response

from strata.pipeline.flow import Flow
from strata.pipeline.stage import Stage


class Drift(Stage):
    name = "strata.drift"

    async def before(self, flow: Flow) -> Response | None:
        monitor = flow.state.observe.drift
        if monitor is not None and flow.surface.kind != "embeddings" and monitor.wants(flow.call.route):
            flow.sampled = True
            if flow.call.answer is None:
                flow.call.answer = []
        return None

    def after(self, flow: Flow) -> None:
        if flow.sampled and flow.call.status == 200 and (monitor := flow.state.observe.drift) is not None:
            from strata.observe.drift.features import Observation, prompt_text

            call, cut = flow.call, monitor.cfg.max_text_chars  # only the cut text waits in memory
            monitor.offer(Observation(
                route=call.route or "", deployment=call.deployment, at=call.started_wall,
                prompt=prompt_text(flow.body or {})[:cut], answer=(call.answer_text or "")[:cut],
                prompt_tokens=call.prompt_tokens, answer_tokens=call.completion_tokens,
                tool_call=call.finish == "tool_calls", role=call.role))
