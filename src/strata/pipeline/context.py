"""Stage ``context``: fit a long conversation into the route's prompt budget (``gateway.window``): drop the
oldest turns, or summarise them through the summarizer route (an internal call with its own ledger row)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from strata.gateway.window import fit
from strata.pipeline.flow import Flow
from strata.pipeline.internal import internal
from strata.pipeline.record import CallRecord
from strata.pipeline.stage import Stage


class Context(Stage):
    name = "strata.context"

    async def before(self, flow: Flow) -> Response | None:
        if flow.prompt_limit is None:
            return None
        route, body, call = flow.route, flow.body, flow.call
        assert route is not None and body is not None
        cfg = route.context
        state = flow.state

        async def summarize(turns: list[dict[str, Any]]) -> str:
            return await summarize_turns(state, call, cfg.summarize_route or "", turns, cfg.summary_max_tokens)

        fitted = await fit(cfg, body["messages"], flow.prompt_limit,
                           summarize if cfg.policy == "summarize" else None)
        if fitted is not None:
            body["messages"] = fitted.messages
            call.headers = {**(call.headers or {}), "x-strata-context": fitted.header()}
            if call.span is not None:
                call.span.set("strata.context", fitted.header())
        return None


async def summarize_turns(state: Any, call: CallRecord, route_name: str, turns: list[dict[str, Any]],
                          max_tokens: int) -> str:
    """A summary of dropped turns by the summarizer route; its call gets its own ledger row (role summary)."""
    transcript = "\n".join(f"{m.get('role')}: {m.get('content')}" for m in turns)
    body = {"model": "", "temperature": 0, "max_tokens": max_tokens,
            "messages": [{"role": "system", "content": "Summarize this conversation in a few sentences. Keep "
                          "names, numbers, decisions and open questions."},
                         {"role": "user", "content": transcript}]}
    result = await internal(state, call, route_name, "summary", "chat", body,
                            lambda t: t.engine.generate("chat", body))
    return str(result["choices"][0]["message"]["content"] or "").strip()
