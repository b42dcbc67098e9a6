"""Cost of a request from its deployment's price.

Token pricing: USD per million input/output tokens. Local engines may instead (or also) declare a cost
per busy engine hour; a request pays for the slot time it held: ``busy_hour / 3600 * seconds / slots``.
"""

from __future__ import annotations

from strata.routing.config import Price


def request_cost(price: Price, prompt_tokens: int, completion_tokens: int, engine_seconds: float,
                 slots: int = 1) -> float:
    cost = (prompt_tokens * price.input_per_mtok + completion_tokens * price.output_per_mtok) / 1_000_000
    if price.busy_hour:
        cost += price.busy_hour / 3600.0 * engine_seconds / max(slots, 1)
    return cost
