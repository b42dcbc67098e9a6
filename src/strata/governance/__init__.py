"""Governance: who may call what (keys, allow-lists) and what it costs."""
