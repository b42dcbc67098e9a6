"""Observability: Prometheus metrics and the usage ledger."""
