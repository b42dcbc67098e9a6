"""Strata: self-hosted AI infrastructure (gateway, engines, governance, observability)."""

__version__ = "0.1.0"
