"""Stage ``account``: what a request cost and did, in the metrics and one ledger row. The last stage, so its
way out runs first: the cost it computes is what ``admit`` settles the budget with, ``cache`` stores with the
answer, and the trace's root span reports."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from strata.governance.cost import request_cost
from strata.observe.slo import count_slow
from strata.pipeline.flow import Flow
from strata.pipeline.record import CallRecord
from strata.pipeline.stage import Stage

if TYPE_CHECKING:
    from strata.gateway.state import AppState
    from strata.routing.router import Target

OPERATIONS = {"completion": "text_completion"}  # call.endpoint -> gen_ai.operation.name (chat, embeddings: same)


class Account(Stage):
    name = "strata.account"

    def after(self, flow: Flow) -> None:
        account(flow.state, flow.call, flow.target)


def account(state: AppState, call: CallRecord, target: Target | None) -> None:
    """Cost, metrics, ledger row; exactly once per request (and per internal call), success or not."""
    finished = time.perf_counter()
    m = state.observe.metrics
    team = call.principal.team if call.principal else "-"
    route, deployment = call.route or "-", call.deployment or "-"
    if target is not None:
        slots = getattr(target.deployment.engine, "n_parallel", 1)
        call.cost = request_cost(target.deployment.price, call.prompt_tokens, call.completion_tokens,
                                 finished - call.started, slots)
    if call.status == 200 and call.role is not None:
        first = call.first_token - call.started if call.first_token is not None else None
        state.routing.rollouts.record(route, call.role, True, finished - call.started, first, call.cost)
    if call.admitted:
        m.in_flight.labels(route).dec()
        m.duration.labels(route, deployment).observe(finished - call.started)
        count_slow(m, state.routing.router.routes.get(route), finished - call.started)
        if call.prompt_tokens or call.completion_tokens:
            per_input, per_output = m.token_usage(route, deployment, OPERATIONS.get(call.endpoint, call.endpoint))
            if call.prompt_tokens:
                m.input_tokens.labels(route, deployment, team).inc(call.prompt_tokens)
                per_input.observe(call.prompt_tokens)
            if call.completion_tokens:
                m.output_tokens.labels(route, deployment, team).inc(call.completion_tokens)
                per_output.observe(call.completion_tokens)
        if call.cached_tokens:
            m.cached_tokens.labels(route, deployment, team).inc(call.cached_tokens)
        if call.cost:
            m.cost.labels(route, deployment, team).inc(call.cost)
    m.requests.labels(route, deployment, team, str(call.status)).inc()
    state.observe.ledger.record(call.to_row(finished))
