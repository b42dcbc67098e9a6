"""THE request path: every request to the inference API goes through these stages, in this order.

    authenticate -> parse -> admit -> guard -> cache -> context -> retrieve -> route -> call -> account

Cheap refusals come first: a bad key (401), a bad body (400), an unknown or forbidden model (404), a rate
limit or budget (429) are decided before any stage that calls an engine of its own (the semantic cache and
complexity routing embed the prompt, the context policy may summarise). The way out runs in reverse order:
``account`` writes the ledger row and metrics, ``route`` starts a shadow mirror, ``cache`` stores the answer,
``admit`` settles limits and budget. A new stage is a module and one line here.
"""

from __future__ import annotations

from strata.pipeline.account import Account
from strata.pipeline.admit import Admit
from strata.pipeline.authenticate import Authenticate
from strata.pipeline.cache import Cache
from strata.pipeline.call import Call
from strata.pipeline.context import Context
from strata.pipeline.drift import Drift
from strata.pipeline.guard import Guard
from strata.pipeline.parse import Parse
from strata.pipeline.quality import Quality
from strata.pipeline.retrieve import Retrieve
from strata.pipeline.route import Route
from strata.pipeline.stage import Pipeline

STAGES = Pipeline(
    Authenticate(),  # who is calling
    Parse(),  # what they ask, and of which route
    Admit(),  # may they: caller throttle, rate limits, budgets
    Guard(),  # is the input safe (guardrails)
    Cache(),  # answered before? (exact, semantic)
    Context(),  # fit the conversation into the model's window
    Retrieve(),  # rag: routes: passages the caller may read, with citations (else a no-op)
    Drift(),  # observe a sample for drift detection, after the response (off: a no-op)
    Quality(),  # pick a sample of answers to score for quality, after the response (off: a no-op)
    Route(),  # which deployments, in which order (complexity tier, balancer, canary, shadow)
    Call(),  # the engine: attempts, retries, fallbacks, stream continuation
    Account(),  # cost, metrics, ledger row
)
