"""Stage ``parse``: read the body (bounded), validate it, and resolve the route it asks for.

From here on the request's ``Disconnect`` watch is armed: a client that leaves cancels the request. The
route is resolved here (a name lookup and the key's access, no engine work) because every later stage is
configured per route.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from strata.gateway.http import Disconnect, parse_tags, read_json
from strata.gateway.schemas import validate
from strata.gateway.window import budget
from strata.pipeline.flow import Flow
from strata.pipeline.stage import Stage


class Parse(Stage):
    name = "strata.parse"

    async def before(self, flow: Flow) -> Response | None:
        state, call, request = flow.state, flow.call, flow.request
        raw = await read_json(request, state.settings.server.max_body_bytes)
        call.watch = Disconnect(request.receive)
        body = await flow.surface.prepare(flow, raw)
        req = validate(flow.surface.schema, body)
        call.user = req.user
        call.tags = parse_tags(request.headers.get("x-strata-tags"))
        call.stream = bool(getattr(req, "stream", False))
        assert call.principal is not None
        route = state.routing.router.resolve(req.model, call.principal, call.endpoint, body)
        flow.body, flow.req, flow.route, call.route = body, req, route, route.name
        if route.context.policy != "off" and "messages" in body:
            flow.prompt_limit = _prompt_budget(flow, req)
        return None


def _prompt_budget(flow: Flow, req: Any) -> int | None:
    """The most prompt tokens the route's context policy lets through (see ``gateway.window``)."""
    route = flow.route
    assert route is not None
    return budget(route.context, route, flow.state.routing.context_window, getattr(req, "output_limit", None))
