"""Stage ``guard``: where input guardrails (prompt injection, PII and secrets) check a request before any
engine sees it. None are configured yet; the stage is in the list so that the order is decided here."""

from __future__ import annotations

from strata.pipeline.stage import Stage


class Guard(Stage):
    name = "strata.guard"
