"""Stage ``guard``: the route's, every route's and the key's team's guard rules (``guard.apply``) on the
request's text, then on the tool outputs it carries (``source="tool"``: indirect injection), before any
engine sees it; ``block`` refuses here (400 ``guard_blocked``), ``redact`` rewrites the body in place, so the
cache key, the engine, the shadow mirror and the stored Responses conversation all get the redacted text.

Answers are checked by ``check_answer``, which the ``call`` stage runs on a JSON answer before it is
returned, cached or mirrored (``json_schema`` may call the engine once more). A stream's answer has reached
the client before it is whole: ``stream_ended`` checks it when the stream ends and can only record (flag),
whatever the rule's action; a streamed answer any output rule found something in is not cached.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response

from strata.guard.apply import Guarding, GuardInvalidOutput, Hit, input_slots, output_slots, rules_for, tool_slots
from strata.guard.base import Embed, GuardContext
from strata.pipeline.flow import Flow
from strata.pipeline.internal import embedder
from strata.pipeline.stage import Stage
from strata.routing.router import Attempts, Target


class Guard(Stage):
    name = "strata.guard"

    async def before(self, flow: Flow) -> Response | None:
        state, call, route, body = flow.state, flow.call, flow.route, flow.body
        assert route is not None and body is not None
        rules = rules_for(state.settings.guards, route, call.principal.team if call.principal else None)
        if not rules:
            return None
        g = call.guard = Guarding(rules, state.observe.metrics)
        embed = _embedder(flow)
        try:
            if g.any("input"):
                await g.check("input", input_slots(body), GuardContext(embed=embed, source="input"))
            if g.any("tool"):
                await g.check("tool", tool_slots(body), GuardContext(embed=embed, source="tool"))
        finally:
            if call.span is not None and g.hits:
                call.span.set("strata.guard", g.span_value())
        if call.stream and g.any("output") and call.answer is None:
            call.answer = []  # the streamed answer, checked when the stream ends
        return None


def _embedder(flow: Flow) -> Embed | None:
    """Embeddings through the guards' embeddings route, as internal calls of this request."""
    embed = embedder(flow.state, flow.state.settings.guards.embeddings_route)
    if embed is None:
        return None
    call = flow.call

    async def run(texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = await embed(texts, call)
        return vectors

    return run


def _context(flow: Flow) -> GuardContext:
    body = flow.body or {}
    return GuardContext(embed=_embedder(flow), source="output", extra={"response_format": body.get("response_format")})


def again(flow: Flow) -> Attempts:
    """A fresh attempt plan for a second call of the same request."""
    a = flow.attempts
    assert a is not None
    return Attempts(a.router, a.route, a.affinity_key, 1 + a.route.retries, a.tier)


Answer = tuple[Target, dict[str, Any]]


async def check_answer(flow: Flow, target: Target, result: dict[str, Any],
                       call_again: Callable[[], Awaitable[Answer]]) -> Answer:
    """The output rules on a JSON answer: redact it in place, refuse it (``GuardBlocked``), or, when
    ``json_schema`` finds it invalid, call the engine once more (``retry``) and then fail (502)."""
    call, g = flow.call, flow.call.guard
    assert isinstance(g, Guarding)
    ctx = _context(flow)
    rule = next((r for r in g.rules if r.detector == "json_schema" and r.action == "block" and r.looks_at("output")),
                None)
    retry = rule is not None and bool(rule._opts.retry)
    invalid = _invalid(await g.check("output", output_slots(result), ctx, final=not retry))
    if invalid is not None and retry:
        spent = call.prompt_tokens, call.completion_tokens
        target, result = await call_again()
        call.prompt_tokens += spent[0]
        call.completion_tokens += spent[1]
        invalid = _invalid(await g.check("output", output_slots(result), ctx))
    _note(flow)
    if invalid is not None:
        problem = invalid.findings[0].replacement or "invalid"
        tries = "twice" if retry else "once"
        raise GuardInvalidOutput(f"The model's answer is not the JSON the request asked for ({problem}); "
                                 f"tried {tries}, guard '{invalid.rule.label}'.")
    return target, result


def _invalid(hits: list[Hit]) -> Hit | None:
    return next((h for h in hits if h.rule.detector == "json_schema" and h.action == "block"), None)


async def stream_ended(flow: Flow) -> None:
    """The output rules on a whole streamed answer: findings are recorded (flag), nothing is taken back."""
    call, g = flow.call, flow.call.guard
    if not isinstance(g, Guarding) or not g.any("output") or call.answer is None:
        return
    hits = await g.check("output", [({"t": "".join(call.answer)}, "t")], _context(flow), flag_only=True)
    if hits:
        call.cached = None
    _note(flow)


def _note(flow: Flow) -> None:
    g, root = flow.call.guard, flow.root
    if root is not None and isinstance(g, Guarding) and g.hits:
        root.set("strata.guard", g.span_value())
