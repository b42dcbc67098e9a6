"""Stage ``authenticate``: who is calling (an API key, or the admin key). A bad key is a 401 before anything
else is read; an IP that keeps sending bad keys gets 429 for a while (``governance.abuse``)."""

from __future__ import annotations

from starlette.responses import Response

from strata.pipeline.flow import Flow
from strata.pipeline.stage import Stage


class Authenticate(Stage):
    name = "strata.authenticate"

    async def before(self, flow: Flow) -> Response | None:
        flow.call.principal = await flow.state.governance.auth.authenticate_request(flow.request)
        return None
