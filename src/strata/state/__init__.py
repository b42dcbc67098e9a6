"""Shared state: counters that must hold across gateway replicas (rate limits, budgets).

``memory`` keeps them in this process (the embedded default); ``redis`` shares them between replicas,
with every check-and-update done atomically in a Lua script. ``SharedState`` puts the configured
backend behind the policy for an unreachable Redis (fail-open on local counters, or fail-closed).
"""
