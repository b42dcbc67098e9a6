"""Stage ``quality``: online quality sampling (``strata.observe.quality``).

``before`` draws the route's sample (routes without ``quality:`` pay one attribute check) and has a picked
answer's text collected; ``after`` hands the answer to the sampler, which scores it in the background once
the ledger row is recorded. The client never waits for a scorer or a judge.
"""

from __future__ import annotations

from starlette.responses import Response

from strata.pipeline.flow import Flow
from strata.pipeline.stage import Stage


class Quality(Stage):
    name = "strata.quality"

    async def before(self, flow: Flow) -> Response | None:
        cfg = flow.route.quality  # type: ignore[union-attr]  # parse set the route
        if cfg is not None and (sampler := flow.state.observe.quality) is not None and sampler.pick(flow, cfg):
            flow.quality = True
            if flow.call.answer is None:
                flow.call.answer = []
        return None

    def after(self, flow: Flow) -> None:
        if flow.quality and (sampler := flow.state.observe.quality) is not None:
            sampler.submit(flow)
