"""What a request's spans say: the OpenTelemetry GenAI semantic conventions plus Strata's own attributes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from strata.errors import StrataError
from strata.observe.tracing import CLIENT, INTERNAL, Span, Trace

if TYPE_CHECKING:
    from starlette.requests import Request

    from strata.gateway.state import AppState
    from strata.pipeline.flow import Flow
    from strata.pipeline.record import CallRecord
    from strata.routing.router import Target

OPERATIONS = {"chat": "chat", "completion": "text_completion", "embeddings": "embeddings"}


def begin_trace(state: AppState, request: Request, request_id: str) -> Trace | None:
    """The request's trace, or None; with tracing off the ``traceparent`` header is not even looked up."""
    tracer = state.observe.tracer
    return tracer.begin(request.headers.get("traceparent"), request_id) if tracer.active else None


def request_attributes(span: Span, flow: Flow) -> None:
    """The request's root span, once the request is over."""
    call, req = flow.call, flow.req
    a = span.attrs
    a["gen_ai.operation.name"] = flow.surface.operation
    a["strata.request_id"] = call.request_id
    a["strata.endpoint"] = call.endpoint
    a["http.response.status_code"] = call.status
    if call.route is not None:
        a["gen_ai.request.model"] = a["strata.route"] = call.route
    if call.model is not None:
        a["gen_ai.response.model"] = call.model
    if call.deployment is not None:
        a["strata.deployment"] = call.deployment
    if call.engine is not None:
        a["gen_ai.provider.name"] = call.engine
    if call.role is not None:
        a["strata.role"] = call.role
    if call.principal is not None:
        a["strata.team"], a["strata.key_id"] = call.principal.team, call.principal.key_id
    if call.user:
        a["user.id"] = call.user
    a["gen_ai.usage.input_tokens"] = call.prompt_tokens
    a["gen_ai.usage.output_tokens"] = call.completion_tokens
    if (served := call.served_span) is not None:  # the GenAI conventions put usage on the model call too
        served.attrs["gen_ai.usage.input_tokens"] = call.prompt_tokens
        served.attrs["gen_ai.usage.output_tokens"] = call.completion_tokens
        if call.model is not None:
            served.attrs["gen_ai.response.model"] = call.model
    a["strata.cost_usd"] = call.cost
    a["strata.stream"] = call.stream
    if call.error_type is not None:
        a["error.type"] = call.error_type
    if call.finish is not None:
        a["gen_ai.response.finish_reasons"] = (call.finish,)
    if call.tier is not None:
        a["strata.tier"] = call.tier
    if req is not None:
        _request_params(a, req)
    for k, v in call.tags.items():
        a[f"strata.tag.{k}"] = v


def _request_params(a: dict[str, Any], req: Any) -> None:
    for attr, field in (("gen_ai.request.max_tokens", "output_limit"), ("gen_ai.request.temperature", "temperature"),
                        ("gen_ai.request.top_p", "top_p"), ("gen_ai.request.seed", "seed")):
        value = getattr(req, field, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            a[attr] = value


def attempt_span(call: CallRecord, target: Target, endpoint: str, number: int) -> Span | None:
    """The span of one engine attempt (an OTel GenAI client span), under the stage that made it."""
    trace = call.trace
    if trace is None:
        return None
    model = target.engine.model or target.deployment.name
    operation = OPERATIONS.get(endpoint, endpoint)
    return trace.start(f"{operation} {model}", call.span, CLIENT, {
        "gen_ai.operation.name": operation, "gen_ai.request.model": model,
        "gen_ai.provider.name": target.engine.engine_type, "strata.deployment": target.deployment.name,
        "strata.attempt": number})


def attempt_ended(span: Span, call: CallRecord, outcome: str, exc: StrataError | None) -> None:
    """An attempt's outcome on its span: what the upstream answered (``http.response.status_code`` only when
    it answered), and for a failure ``error.type`` and the error's message as the span status."""
    span.attrs["strata.outcome"] = outcome
    if exc is None:
        span.attrs["http.response.status_code"] = 200
        call.served_span = span  # the model call that answered: it gets the usage once the request is over
        span.end()
        return
    if exc.upstream_status is not None:
        span.attrs["http.response.status_code"] = exc.upstream_status
    span.attrs["error.type"] = outcome
    span.end(exc.message)


def internal_span(parent: CallRecord, route: str, role: str, endpoint: str) -> Span | None:
    """The span of one of the gateway's own calls (an embedding for the cache, a summary)."""
    trace = parent.trace
    if trace is None:
        return None
    operation = OPERATIONS.get(endpoint, endpoint)
    return trace.start(f"{operation} {route}", parent.span, INTERNAL, {
        "gen_ai.operation.name": operation, "gen_ai.request.model": route, "strata.route": route,
        "strata.role": role})
