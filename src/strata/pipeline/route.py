"""Stage ``route``: which deployments may serve this request, in which order. Complexity routing scores the
request (its embedding, through the embeddings route) and picks a tier; the router's balancer, breakers,
canary share and affinity make the attempt plan. A shadow deployment, if the route mirrors, is chosen here
and mirrored on the way out once the request was served."""

from __future__ import annotations

from starlette.responses import Response

from strata.gateway.shadow import mirror, shadow_body
from strata.pipeline.flow import Flow
from strata.pipeline.stage import Stage


class Route(Stage):
    name = "strata.route"

    async def before(self, flow: Flow) -> Response | None:
        state, call, route, body = flow.state, flow.call, flow.route, flow.body
        assert route is not None and body is not None
        if route.complexity is not None and (scorer := state.routing.scorers.get(route.name)) is not None:
            score = await scorer.score(body, call)
            call.tier, call.route_score = score.tier, score.value
            state.observe.metrics.route_tier.labels(route.name, score.tier).inc()
        affinity = flow.request.headers.get("x-strata-affinity") or call.user
        flow.attempts = state.routing.router.attempts(route, affinity, call.tier)
        if flow.surface.shadowed and (mirror_to := state.routing.router.shadow_for(route)) is not None:
            flow.shadow = mirror_to, shadow_body(body)
            call.answer = []
        return None

    def after(self, flow: Flow) -> None:
        if flow.shadow is not None and flow.call.status == 200:
            mirror(flow.state, flow.call, flow.shadow[0], flow.call.endpoint, flow.shadow[1])  # type: ignore[arg-type]
