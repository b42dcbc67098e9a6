"""Writes Strata's Grafana dashboard (``strata-dashboard.json`` beside this file) from the panel list below.

    python deploy/grafana/dashboard.py

The JSON is what operators import (Grafana 10/11: Dashboards -> New -> Import, pick the Prometheus data source
for ``DS_PROMETHEUS``); this script is how it is changed: edit a panel here, run it, commit both.
``tests/test_dashboard.py`` checks that the JSON is this script's output and that every metric an expression
names is one a running Strata exposes on ``/metrics`` (or a recording rule of deploy/prometheus/strata-rules.yml).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("strata-dashboard.json")
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
R = 'route=~"$route"'
RD = 'route=~"$route", deployment=~"$deployment"'
D = 'deployment=~"$deployment"'
I = "$__rate_interval"  # noqa: E741


@dataclass
class Panel:
    title: str
    targets: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def quantiles(metric: str, sel: str, by: str = "") -> list[tuple[str, str]]:
    group = f"le, {by}" if by else "le"
    prefix = "{{" + by + "}} " if by else ""
    return [(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{sel}}}[{I}])))", f"{prefix}p{p}")
            for q, p in ((0.5, 50), (0.95, 95), (0.99, 99))]


def ratio(num: str, den: str) -> str:
    return f"({num}) / clamp_min({den}, 1e-9)"


REQS = f"sum(rate(strata_requests_total{{{RD}}}[{I}]))"
ERRS = f'sum(rate(strata_requests_total{{{RD}, status=~"5.."}}[{I}]))'

ROWS: list[tuple[str, list[Panel]]] = [
    ("Overview", [
        Panel("Requests per second", [(REQS, "requests/s")], "reqps", "stat", 4),
        Panel("Error rate (5xx)", [(ratio(ERRS, REQS), "5xx share")], "percentunit", "stat", 4,
              "Share of requests answered with a 5xx; the page alert fires above 5%."),
        Panel("Requests in flight", [(f"sum(strata_requests_in_flight{{{R}}})", "in flight")], "short", "stat", 4),
        Panel("Output tokens per second", [(f"sum(rate(strata_output_tokens_total{{{RD}}}[{I}]))", "output"),
                                           (f"sum(rate(strata_input_tokens_total{{{RD}}}[{I}]))", "input")],
              "short", "timeseries", 12),
        Panel("Request latency", quantiles("strata_request_duration_seconds", RD), "s", width=12,
              description="End-to-end, arrival to last byte (GenAI: gen_ai.server.request.duration)."),
        Panel("Time to first token", quantiles("strata_time_to_first_token_seconds", RD), "s", width=12,
              description="Streamed requests only (GenAI: gen_ai.server.time_to_first_token)."),
        Panel("Requests by status", [(f"sum by (status) (rate(strata_requests_total{{{RD}}}[{I}]))",
                                      "{{status}}")], "reqps", width=12),
        Panel("Inter-token latency", quantiles("strata_inter_token_latency_seconds", RD), "s", width=12,
              description="Gap between streamed tokens (GenAI: gen_ai.server.time_per_output_token)."),
    ]),
    ("Per route", [
        Panel("Requests per second by route", [(f"sum by (route) (rate(strata_requests_total{{{R}}}[{I}]))",
                                                "{{route}}")], "reqps"),
        Panel("Error rate by route", [(ratio(f'sum by (route) (rate(strata_requests_total{{{R}, status=~"5.."}}[{I}]))',
                                             f"sum by (route) (rate(strata_requests_total{{{R}}}[{I}]))"),
                                       "{{route}}")], "percentunit"),
        Panel("p95 latency by route", [(f"histogram_quantile(0.95, sum by (le, route) "
                                        f"(rate(strata_request_duration_seconds_bucket{{{R}}}[{I}])))", "{{route}}")],
              "s"),
        Panel("Tokens per request (p50, p95)",
              [(f"histogram_quantile({q}, sum by (le, token_type) (rate(strata_request_tokens_bucket{{{RD}}}[{I}])))",
                f"{{{{token_type}}}} p{p}") for q, p in ((0.5, 50), (0.95, 95))], "short",
              description="GenAI: gen_ai.client.token.usage."),
        Panel("Failed requests by cause", [(f"sum by (route, attributed_to) (rate(strata_request_failures_total"
                                            f"{{{R}}}[{I}]))", "{{route}} {{attributed_to}}")], "reqps",
              description="Requests that failed on every deployment tried: blamed on the deployment or the request."),
        Panel("Complexity tiers", [(f"sum by (route, tier) (rate(strata_route_tier_requests_total{{{R}}}[{I}]))",
                                    "{{route}} {{tier}}")], "reqps"),
    ]),
    ("Per deployment", [
        Panel("Requests per second by deployment", [(f"sum by (deployment) (rate(strata_requests_total{{{RD}}}"
                                                     f"[{I}]))", "{{deployment}}")], "reqps"),
        Panel("p95 latency by deployment", [(f"histogram_quantile(0.95, sum by (le, deployment) "
                                             f"(rate(strata_request_duration_seconds_bucket{{{RD}}}[{I}])))",
                                             "{{deployment}}")], "s"),
        Panel("p95 upstream attempt latency", [(f"histogram_quantile(0.95, sum by (le, deployment) "
                                                f"(rate(strata_upstream_attempt_duration_seconds_bucket{{{D}}}[{I}])))",
                                                "{{deployment}}")], "s",
              description="One call to the engine, retries each counted (GenAI: gen_ai.client.operation.duration); "
                          "the gap to the request latency is the gateway's own time."),
        Panel("Upstream attempts by outcome", [(f"sum by (deployment, outcome) (rate(strata_upstream_attempts_total"
                                                f"{{{D}}}[{I}]))", "{{deployment}} {{outcome}}")], "reqps"),
        Panel("Canary traffic share", [(f"max by (route, deployment) (strata_canary_traffic_ratio{{{RD}}})",
                                        "{{route}} {{deployment}}")], "percentunit"),
        Panel("Shadow requests", [(f"sum by (deployment, outcome) (rate(strata_shadow_requests_total{{{RD}}}[{I}]))",
                                   "{{deployment}} {{outcome}}")], "reqps"),
        Panel("Rollout events", [(f"sum by (kind) (increase(strata_events_total{{kind=~\"canary_.*\"}}[{I}]))",
                                  "{{kind}}")], "short"),
    ]),
    ("Cost", [
        Panel("Spend rate (USD per hour)", [(f"sum by (route) (rate(strata_cost_usd_total{{{RD}}}[{I}])) * 3600",
                                            "{{route}}")], "currencyUSD"),
        Panel("Spend by team, last 24 h", [(f"sum by (team) (increase(strata_cost_usd_total{{{RD}}}[24h]))",
                                            "{{team}}")], "currencyUSD", "bargauge"),
        Panel("Refused by limits and budgets", [(f"sum by (scope, kind) (rate(strata_rate_limited_total[{I}]))",
                                                 "{{scope}} {{kind}}")], "reqps"),
        Panel("Budget events", [('sum by (kind) (increase(strata_events_total{kind=~"budget_.*"}[1h]))',
                                 "{{kind}}")], "short", width=12),
        Panel("Spend week over week", [(ratio(f"sum(increase(strata_cost_usd_total{{{RD}}}[7d]))",
                                              f"sum(increase(strata_cost_usd_total{{{RD}}}[7d] offset 7d))"),
                                        "this week / last week")], "percentunit", "stat", 12,
              "The ticket alert fires when this leaves 0.8..1.2."),
    ]),
    ("Quality", [
        Panel("Mean quality score", [(ratio(f"sum by (route, scorer) (rate(strata_quality_score_sum{{{RD}}}[1h]))",
                                            f"sum by (route, scorer) (rate(strata_quality_score_count{{{RD}}}[1h]))"),
                                      "{{route}} {{scorer}}")], "percentunit",
              description="Online quality of sampled answers, 0..1 (1 best), by scorer."),
        Panel("Quality score p10", [(f"histogram_quantile(0.1, sum by (le, route, deployment) "
                                     f"(rate(strata_quality_score_bucket{{{RD}}}[1h])))", "{{route}} {{deployment}}")],
              "percentunit", description="The worst tenth of sampled answers scores below this."),
        Panel("Quality sampling", [(f"sum by (route, outcome) (rate(strata_quality_samples_total{{{R}}}[{I}]))",
                                    "{{route}} {{outcome}}")], "reqps",
              description="skipped_busy: the scorers were saturated and the sample was dropped, never the client."),
    ]),
    ("Drift", [
        Panel("Drift detected", [(f"max by (route, signal) (strata_drift_detected{{{R}}})", "{{route}} {{signal}}")],
              "short", "stat", 6, "1: the last check flagged the signal (corrected p-value and minimum effect)."),
        Panel("Drift effect size", [(f"max by (route, signal) (strata_drift_statistic{{{R}}})",
                                     "{{route}} {{signal}}")], "short", width=6),
        Panel("Drift p-value (corrected)", [(f"min by (route, signal) (strata_drift_p_value{{{R}}})",
                                             "{{route}} {{signal}}")], "short", width=6),
        Panel("Drift checks", [(f"sum by (route, outcome) (increase(strata_drift_checks_total{{{R}}}[1h]))",
                                "{{route}} {{outcome}}")], "short", width=6),
    ]),
    ("Cache", [
        Panel("Exact/semantic cache hit rate", [(ratio(f'sum by (route) (rate(strata_cache_requests_total{{{R}, '
                                                       f'result=~"hit|semantic_hit"}}[{I}]))',
                                                       f'sum by (route) (rate(strata_cache_requests_total{{{R}, '
                                                       f'result!="bypass"}}[{I}]))'), "{{route}}")],
              "percentunit", width=12),
        Panel("Engine prompt-cache share", [(ratio(f"sum by (route) (rate(strata_cached_prompt_tokens_total{{{RD}}}"
                                                   f"[{I}]))",
                                                   f"sum by (route) (rate(strata_input_tokens_total{{{RD}}}[{I}]))"),
                                             "{{route}}")], "percentunit", width=12,
              description="Prompt tokens the engine served from its own prompt cache."),
    ]),
    ("Engines", [
        Panel("Engine up", [(f"max by (deployment) (strata_engine_up{{{D}}})", "{{deployment}}")], "short", "stat", 6),
        Panel("Breaker state", [(f"max by (deployment) (strata_deployment_breaker_state{{{D}}})", "{{deployment}}")],
              "short", "stat", 6, "0 closed, 1 half-open, 2 open (ejected)."),
        Panel("Busy slots and queue", [(f"sum by (deployment) (strata_engine_busy_slots{{{D}}})",
                                        "{{deployment}} busy"),
                                       (f"sum by (deployment) (strata_engine_queue_depth{{{D}}})",
                                        "{{deployment}} queued")], "short", width=6),
        Panel("In flight per deployment", [(f"sum by (deployment) (strata_deployment_in_flight{{{D}}})",
                                            "{{deployment}}")], "short", width=6),
        Panel("Worker restarts", [(f"sum by (deployment) (increase(strata_engine_restarts_total{{{D}}}[1h]))",
                                   "{{deployment}}")], "short", width=8),
        Panel("Routes in panic", [(f"max by (route) (strata_route_panic{{{R}}})", "{{route}}")], "short", width=8,
              description="1: every deployment of the route is ejected and it is served anyway."),
        Panel("Control loops", [("sum by (loop) (increase(strata_loop_errors_total[1h]))", "{{loop}} errors"),
                                ("sum by (loop) (increase(strata_loop_restarts_total[1h]))", "{{loop}} restarts")],
              "short", width=8),
    ]),
    ("Alerts and SLOs", [
        Panel("Firing alerts by tier", [('sum by (tier, alertname) (ALERTS{alertstate="firing"})',
                                         "{{tier}} {{alertname}}")], "short", "table", 12,
              "From Prometheus evaluating deploy/prometheus/strata-rules.yml."),
        Panel("Alerts forwarded by Strata", [("sum by (tier, outcome) (increase(strata_alerts_forwarded_total[1h]))",
                                              "{{tier}} {{outcome}}")], "short", width=12),
        Panel("SLO objectives", [(f"max by (route, slo) (strata_slo_objective{{{R}}})", "{{route}} {{slo}}")],
              "percentunit", "stat", 8),
        Panel("Availability burn rate (1 h)", [(f"route:strata_availability_errors:ratio_rate1h{{{R}}} / on (route) "
                                                f'route:strata_slo_error_budget:ratio{{{R}, slo="availability"}}',
                                                "{{route}}")], "short", width=8,
              description="Error-budget burn rate: 1 spends the budget exactly over the SLO window; the "
                          "fast-burn page needs 14.4 over 1 h and 5 min."),
        Panel("Latency burn rate (1 h)", [(f"route:strata_latency_slow:ratio_rate1h{{{R}}} / on (route) "
                                           f'route:strata_slo_error_budget:ratio{{{R}, slo="latency"}}', "{{route}}")],
              "short", width=8),
        Panel("Slow requests (over the latency SLO threshold)",
              [(f"sum by (route) (rate(strata_slow_requests_total{{{R}}}[{I}]))", "{{route}}")], "reqps", width=12),
        Panel("Telemetry health", [(f"sum(rate(strata_traces_dropped_total[{I}]))", "traces dropped"),
                                   (f"sum(rate(strata_metrics_export_failures_total[{I}]))",
                                    "OTLP metric exports failed"),
                                   ("sum(strata_ledger_pending_rows)", "ledger rows pending")], "short", width=12),
    ]),
]


def panel_json(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    height = 5 if p.kind == "stat" else 8
    out: dict[str, Any] = {
        "id": pid, "type": p.kind, "title": p.title, "datasource": DS,
        "gridPos": {"h": height, "w": p.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}} if p.kind == "timeseries" else {},
        "targets": [{"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i),
                     "range": True, **({"instant": True, "format": "table", "range": False}
                                       if p.kind == "table" else {})}
                    for i, (expr, legend) in enumerate(p.targets)],
    }
    if p.description:
        out["description"] = p.description
    out.update(p.extra)
    return out


def panels() -> list[dict[str, Any]]:
    out, pid, y = [], 1, 0
    for title, row in ROWS:
        out.append({"id": pid, "type": "row", "title": title, "collapsed": False, "panels": [],
                    "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        pid, y, x, line = pid + 1, y + 1, 0, 0
        for p in row:
            if x + p.width > 24:
                x, y, line = 0, y + line, 0
            out.append(panel_json(p, pid, x, y))
            pid, x, line = pid + 1, x + p.width, max(line, 5 if p.kind == "stat" else 8)
        y += line
    return out


def variable(name: str, query: str) -> dict[str, Any]:
    return {"name": name, "label": name, "type": "query", "datasource": DS, "definition": query,
            "query": {"query": query, "refId": f"{name}-values"}, "refresh": 2, "sort": 1, "multi": True,
            "includeAll": True, "allValue": ".*", "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [], "hide": 0, "regex": ""}


def dashboard() -> dict[str, Any]:
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "description": "Prometheus scraping Strata",
                      "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "__requires": [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
                       {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"}],
        "uid": "strata-overview", "title": "Strata", "tags": ["strata", "llm", "gateway"],
        "description": "Strata gateway: traffic, latency, tokens, cost, quality, drift, cache, engines, alerts, SLOs.",
        "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1, "timezone": "",
        "time": {"from": "now-6h", "to": "now"}, "refresh": "30s",
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "name": "Annotations & Alerts", "type": "dashboard",
                                  "iconColor": "rgba(0, 211, 255, 1)"}]},
        "templating": {"list": [
            {"name": "DS_PROMETHEUS", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
            variable("route", "label_values(strata_requests_total, route)"),
            variable("deployment", 'label_values(strata_requests_total{route=~"$route"}, deployment)'),
        ]},
        "panels": panels(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
