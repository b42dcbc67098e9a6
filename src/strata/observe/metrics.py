"""Prometheus metrics with bounded label sets: route, deployment, team, status (HTTP code).

Routes and deployments come from config and teams from the key table, so every label set is bounded.
The registry belongs to the app instance (no module-level state).

Names follow the Prometheus conventions (checked by ``tests/test_metrics_conventions.py``): counters end
in ``_total``, units are in the name in base units (``_seconds``, ``_usd``, ``_tokens``), shares are
``_ratio`` gauges from 0 to 1, and no ``_created`` series is exported (see ``render``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TOKEN_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5)
LOOP_STEP_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 5, 10, 30, 60)
QUALITY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)  # OTel GenAI's advice, to 1M


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("strata_requests_total", "Requests handled", ["route", "deployment", "team", "status"],
                                registry=r)
        self.duration = Histogram("strata_request_duration_seconds", "End-to-end request latency",
                                  ["route", "deployment"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("strata_time_to_first_token_seconds", "Time to first streamed token",
                              ["route", "deployment"], buckets=LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("strata_inter_token_latency_seconds", "Time between streamed tokens",
                             ["route", "deployment"], buckets=TOKEN_LATENCY_BUCKETS, registry=r)
        self.input_tokens = Counter("strata_input_tokens_total", "Prompt tokens", ["route", "deployment", "team"],
                                    registry=r)
        self.output_tokens = Counter("strata_output_tokens_total", "Completion tokens", ["route", "deployment", "team"],
                                     registry=r)
        self.cached_tokens = Counter("strata_cached_prompt_tokens_total", "Prompt tokens the engine served from its "
                                     "prompt cache", ["route", "deployment", "team"], registry=r)
        self.request_tokens = Histogram("strata_request_tokens", "Tokens per request, by token_type (input, "
                                        "output) and GenAI operation (chat, text_completion, embeddings): "
                                        "gen_ai.client.token.usage", ["route", "deployment", "operation",
                                                                      "token_type"], buckets=TOKEN_BUCKETS,
                                        registry=r)
        self._token_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self.cost = Counter("strata_cost_usd_total", "Cost in USD", ["route", "deployment", "team"], registry=r)
        self.in_flight = Gauge("strata_requests_in_flight", "Requests being served", ["route"], registry=r)
        self.engine_up = Gauge("strata_engine_up", "1 when the deployment's engine is ready", ["deployment"],
                               registry=r)
        self.engine_busy = Gauge("strata_engine_busy_slots", "Engine slots decoding now", ["deployment"],
                                 registry=r)
        self.engine_queue = Gauge("strata_engine_queue_depth", "Requests waiting for an engine slot",
                                  ["deployment"], registry=r)
        self.engine_restarts = Counter("strata_engine_restarts_total", "Worker restarts", ["deployment"],
                                       registry=r)
        self.attempts = Counter("strata_upstream_attempts_total", "Attempts on deployments, by outcome",
                                ["deployment", "outcome"], registry=r)
        self.attempt_duration = Histogram("strata_upstream_attempt_duration_seconds", "One attempt on a "
                                          "deployment's engine, by outcome (ok or the error code): "
                                          "gen_ai.client.operation.duration", ["deployment", "outcome"],
                                          buckets=LATENCY_BUCKETS, registry=r)
        self._attempt_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.breaker = Gauge("strata_deployment_breaker_state", "0 closed, 1 half-open, 2 open (ejected)",
                             ["deployment"], registry=r)
        self.deployment_in_flight = Gauge("strata_deployment_in_flight", "Requests held by a deployment",
                                          ["deployment"], registry=r)
        self.events = Counter("strata_events_total", "Operator events (canary_rollback, canary_promote, canary_step)",
                              ["kind"], registry=r)
        self.canary_traffic = Gauge("strata_canary_traffic_ratio", "Share of a route's requests sent to its "
                                    "canary, 0 to 1", ["route", "deployment"], registry=r)
        self.shadow_requests = Counter("strata_shadow_requests_total", "Mirrored requests, by outcome (ok, error, "
                                       "dropped)", ["route", "deployment", "outcome"], registry=r)
        self.route_tier = Counter("strata_route_tier_requests_total", "Complexity-routed requests by chosen tier",
                                  ["route", "tier"], registry=r)
        self.state_up = Gauge("strata_state_backend_up", "1 when the shared-state backend (Redis) answers",
                              registry=r)
        self.state_errors = Counter("strata_state_backend_errors_total", "Failed shared-state (Redis) calls",
                                    registry=r)
        self.traces_dropped = Counter("strata_traces_dropped_total", "Finished traces dropped because the export "
                                      "queue was full", registry=r)
        self.trace_export_failures = Counter("strata_trace_export_failures_total", "Spans an OTLP export gave up "
                                             "on after its retries", registry=r)
        self.metrics_export_failures = Counter("strata_metrics_export_failures_total", "OTLP metric exports that "
                                               "failed (the next one carries the totals)", registry=r)
        self.limited = Counter("strata_rate_limited_total", "Requests refused by a rate limit or budget",
                               ["scope", "kind"], registry=r)
        self.guard_findings = Counter("strata_guard_findings_total", "Guard findings, by guard, action and where "
                                      "(input, output)", ["guard", "action", "where"], registry=r)
        self.cache = Counter("strata_cache_requests_total", "Exact-cache lookups by result (hit, miss, bypass)",
                             ["route", "result"], registry=r)
        self.ledger_written = Counter("strata_ledger_rows_written_total", "Ledger rows persisted", registry=r)
        self.ledger_pending = Gauge("strata_ledger_pending_rows", "Ledger rows waiting to be written", registry=r)
        self.ledger_errors = Counter("strata_ledger_write_errors_total", "Failed ledger batch writes", registry=r)
        self.request_failures = Counter("strata_request_failures_total", "Requests that failed on every deployment "
                                        "tried, by whom the failure was attributed to (deployment, request)",
                                        ["route", "attributed_to"], registry=r)
        self.callers_throttled = Counter("strata_callers_throttled_total", "Keys slowed down (429) because their "
                                         "requests kept failing upstream while others were served", ["route"],
                                         registry=r)
        self.route_panic = Gauge("strata_route_panic", "1 while every deployment of the route is ejected and "
                                 "requests are sent to ejected ones anyway", ["route"], registry=r)
        self.panic_requests = Counter("strata_panic_requests_total", "Requests sent to an ejected deployment "
                                      "because the route had no other", ["route"], registry=r)
        self.loop_step_seconds = Histogram("strata_loop_step_seconds", "Duration of one step of a control loop "
                                           "(engine health, canary analysis, policy sync, ...)", ["loop"],
                                           buckets=LOOP_STEP_BUCKETS, registry=r)
        self.loop_errors = Counter("strata_loop_errors_total", "Control-loop steps that raised (logged; the loop "
                                   "goes on at its next interval)", ["loop"], registry=r)
        self.alerts_forwarded = Counter("strata_alerts_forwarded_total", "Operator events forwarded to the alert "
                                        "webhook, by tier and outcome (sent, failed, deduplicated, dropped)",
                                        ["tier", "outcome"], registry=r)
        self.slo_objective = Gauge("strata_slo_objective", "A route's configured SLO target (slo: availability, "
                                   "latency), 0 to 1", ["route", "slo"], registry=r)
        self.slo_latency_threshold = Gauge("strata_slo_latency_threshold_seconds", "A route's latency SLO "
                                           "threshold (slo.latency.threshold_ms), the p99 SLA", ["route"],
                                           registry=r)
        self.slow_requests = Counter("strata_slow_requests_total", "Requests slower than their route's "
                                     "slo.latency.threshold_ms (routes with a latency SLO)", ["route"], registry=r)
        self.loop_restarts = Counter("strata_loop_restarts_total", "Control-loop tasks that died and were "
                                     "restarted", ["loop"], registry=r)
        self.quality_score = Histogram("strata_quality_score", "Online quality scores of sampled answers (0..1, "
                                       "higher is better), by scorer", ["route", "deployment", "scorer"],
                                       buckets=QUALITY_BUCKETS, registry=r)
        self.quality_samples = Counter("strata_quality_samples_total", "Answers picked for quality scoring, by "
                                       "outcome (scored, skipped_busy, failed)", ["route", "outcome"], registry=r)
        self.drift_statistic = Gauge("strata_drift_statistic", "Drift effect size of a signal at the last check "
                                     "(MMD², KS distance, rate difference or Cramér's V)", ["route", "signal"],
                                     registry=r)
        self.drift_p_value = Gauge("strata_drift_p_value", "Drift p-value of a signal at the last check (Holm-"
                                   "corrected across the route's signals)", ["route", "signal"], registry=r)
        self.drift_detected = Gauge("strata_drift_detected", "1 when the last check flagged the signal (corrected "
                                    "p-value below alpha and effect at least the minimum)", ["route", "signal"],
                                    registry=r)
        self.drift_checks = Counter("strata_drift_checks_total", "Drift checks by outcome (ok, drift, "
                                    "insufficient_data, failed)", ["route", "outcome"], registry=r)
        self.drift_samples = Counter("strata_drift_samples_total", "Requests observed for drift, by outcome "
                                     "(sampled, embedding_failed, dropped_busy)", ["route", "outcome"], registry=r)

    def token_usage(self, route: str, deployment: str, operation: str) -> tuple[Any, Any]:
        """The (input, output) children of ``strata_request_tokens``, looked up once per label set (the
        library's ``labels()`` costs as much as the observation; label sets are bounded by the config)."""
        key = (route, deployment, operation)
        found = self._token_children.get(key)
        if found is None:
            h = self.request_tokens
            found = self._token_children[key] = (h.labels(route, deployment, operation, "input"),
                                                 h.labels(route, deployment, operation, "output"))
        return found

    def attempt_ended(self, deployment: str, outcome: str, seconds: float) -> None:
        """Count and time one attempt (children cached like ``token_usage``'s)."""
        key = (deployment, outcome)
        found = self._attempt_children.get(key)
        if found is None:
            found = self._attempt_children[key] = (self.attempts.labels(deployment, outcome),
                                                   self.attempt_duration.labels(deployment, outcome))
        found[0].inc()
        found[1].observe(seconds)

    def render(self) -> bytes:
        """The text exposition, without the ``_created`` series prometheus_client adds to counters and
        histograms (they double the series count and no dashboard uses them). Filtered here rather than with
        ``prometheus_client.disable_created_metrics()``, which flips a process-wide switch in the library."""
        return generate_latest(_WithoutCreated(self.registry))


class _WithoutCreated(Collector):
    """A registry view whose metric families carry no ``*_created`` samples."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():  # fresh Metric objects on every collect
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family
