"""Guardrails: detectors that look at what goes to a model and what comes back (prompt injection, PII and
secrets, output validation), run by the pipeline's ``guard`` stage with an action per rule."""
