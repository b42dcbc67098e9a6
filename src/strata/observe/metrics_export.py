"""Metrics by OTLP/HTTP as well as ``/metrics``: a control loop converts the Prometheus registry to OTLP.

Every ``export_interval`` the ``otlp-metrics`` loop (``strata.app.loops``) reads the same registry a Prometheus
scrape reads and posts it, as one ``ExportMetricsServiceRequest``, to the collector tracing already exports to
(``tracing.otlp``; ``/v1/metrics`` instead of ``/v1/traces``). Nothing runs per request: the cost is one
collect and encode per interval, off the event loop. Sums and histograms are cumulative (start time: the
series' creation), so an export that fails loses nothing; the next one carries the totals.

Names: each ``strata_*`` family keeps its Prometheus name (a counter without ``_total``, which OTLP-to-Prometheus
translation adds back), so dashboards work on either path. With ``metrics.genai: true`` the export also
carries the OpenTelemetry GenAI metrics, computed from the same series (``GENAI``): the route is
``gen_ai.request.model`` of the server metrics, the deployment's engine model ``gen_ai.response.model`` (and the
request model of ``gen_ai.client.operation.duration``, Strata's own calls to engines), its engine type
``gen_ai.provider.name``, a failed attempt's outcome ``error.type``.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field

from strata import __version__
from strata.config.base import Strict

if TYPE_CHECKING:
    import httpx
    from opentelemetry.proto.metrics.v1 import metrics_pb2
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric as Family

    from strata.observe.tracing import OtlpSettings

log = logging.getLogger(__name__)


class MetricsSettings(Strict):
    """The OTLP export of the metrics (``/metrics`` is always on)."""

    otlp: bool = Field(True, description="Export the metrics by OTLP/HTTP to the collector tracing.otlp names "
                       "(…/v1/metrics; or OTEL_EXPORTER_OTLP_METRICS_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT), "
                       "when one is configured")
    export_interval: float = Field(15.0, gt=0, description="Seconds between OTLP metric exports (cumulative: a "
                                   "failed export loses nothing)")
    genai: bool = Field(True, description="Add the OpenTelemetry GenAI metrics (gen_ai.server.request.duration, "
                        "gen_ai.server.time_to_first_token, gen_ai.server.time_per_output_token, "
                        "gen_ai.client.token.usage) to the OTLP export")


def resolve_metrics_endpoint(cfg: OtlpSettings, environ: Mapping[str, str]) -> str | None:
    """Where metrics go: beside the traces of ``tracing.otlp``, else OpenTelemetry's environment variables."""
    if cfg.endpoint:
        url = cfg.endpoint.rstrip("/")
        return url if url.endswith("/v1/metrics") else url.removesuffix("/v1/traces") + "/v1/metrics"
    if environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
        return environ["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"]
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/metrics"
    return None


# --- GenAI semantic conventions, from Strata's own series ----------------------------------------------------

@dataclass(frozen=True)
class GenAiView:
    name: str
    unit: str
    description: str
    client: bool = False  # Strata calling an engine (request model: the engine's), not serving a client


GENAI: dict[str, GenAiView] = {
    "strata_request_duration_seconds": GenAiView(
        "gen_ai.server.request.duration", "s", "Time from the request's arrival to its last byte"),
    "strata_time_to_first_token_seconds": GenAiView(
        "gen_ai.server.time_to_first_token", "s", "Time to the first streamed token"),
    "strata_inter_token_latency_seconds": GenAiView(
        "gen_ai.server.time_per_output_token", "s", "Time between streamed output tokens (per gap, not a "
        "per-request mean)"),
    "strata_request_tokens": GenAiView(
        "gen_ai.client.token.usage", "{token}", "Tokens per request, by gen_ai.token.type"),
    "strata_upstream_attempt_duration_seconds": GenAiView(
        "gen_ai.client.operation.duration", "s", "One attempt on a deployment's engine", client=True),
}

Deployments = Callable[[], Mapping[str, tuple[str, Any]]]  # deployment -> (its route, its engine)


def genai_attributes(labels: Mapping[str, str], deployments: Mapping[str, tuple[str, Any]],
                     view: GenAiView) -> dict[str, str]:
    """The GenAI attributes of one series of a ``GENAI`` family (Strata's labels kept as ``strata.*``)."""
    deployment = labels.get("deployment", "-")
    owner, engine = deployments.get(deployment, ("-", None))
    route = labels.get("route", owner)
    engine_type = getattr(engine, "engine_type", None)
    model = str(getattr(engine, "model", deployment))
    operation = labels.get("operation") or ("embeddings" if engine_type == "sentence-transformers" else "chat")
    attrs = {"gen_ai.operation.name": operation, "gen_ai.request.model": model if view.client else route,
             "strata.route": route, "strata.deployment": deployment}
    if engine is not None:
        attrs["gen_ai.provider.name"] = str(engine_type)
        attrs["gen_ai.response.model"] = model
    if "token_type" in labels:
        attrs["gen_ai.token.type"] = labels["token_type"]
    if labels.get("outcome", "ok") != "ok":
        attrs["error.type"] = labels["outcome"]
    return attrs


# --- Prometheus families -> OTLP ----------------------------------------------------------------------------

def _attrs(labels: Mapping[str, str]) -> list[Any]:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in sorted(labels.items())]


def _created(family: Family) -> dict[tuple[tuple[str, str], ...], int]:
    return {tuple(sorted(s.labels.items())): int(s.value * 1e9) for s in family.samples
            if s.name.endswith("_created")}


def _number_points(family: Family, now: int, suffix: str) -> list[metrics_pb2.NumberDataPoint]:
    from opentelemetry.proto.metrics.v1.metrics_pb2 import NumberDataPoint

    created = _created(family)
    return [NumberDataPoint(attributes=_attrs(s.labels), as_double=s.value, time_unix_nano=now,
                            start_time_unix_nano=created.get(tuple(sorted(s.labels.items())), 0))
            for s in family.samples if s.name == family.name + suffix]


def _histogram_points(family: Family, now: int) -> list[metrics_pb2.HistogramDataPoint]:
    from opentelemetry.proto.metrics.v1.metrics_pb2 import HistogramDataPoint

    series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for s in family.samples:
        labels = {k: v for k, v in s.labels.items() if k != "le"}
        one = series.setdefault(tuple(sorted(labels.items())), {"labels": labels, "buckets": []})
        kind = s.name.removeprefix(family.name)
        if kind == "_bucket":
            one["buckets"].append((float(s.labels["le"]), s.value))
        else:
            one[kind] = s.value
    points = []
    for one in series.values():
        buckets = sorted(one["buckets"])
        counts = [int(c - (buckets[i - 1][1] if i else 0)) for i, (_, c) in enumerate(buckets)]
        points.append(HistogramDataPoint(
            attributes=_attrs(one["labels"]), time_unix_nano=now,
            start_time_unix_nano=int(one.get("_created", 0) * 1e9), count=int(one.get("_count", 0)),
            sum=one.get("_sum", 0.0), bucket_counts=counts,
            explicit_bounds=[le for le, _ in buckets if le != float("inf")]))
    return points


def _unit(name: str) -> str:
    return "s" if name.endswith("_seconds") else "{token}" if name.endswith("_tokens") else ""


def convert(family: Family, now: int) -> metrics_pb2.Metric | None:
    """One Prometheus metric family as one OTLP metric (None for a type Strata does not use)."""
    from opentelemetry.proto.metrics.v1.metrics_pb2 import AGGREGATION_TEMPORALITY_CUMULATIVE as CUMULATIVE
    from opentelemetry.proto.metrics.v1.metrics_pb2 import Gauge, Histogram, Metric, Sum

    m = Metric(name=family.name, unit=_unit(family.name), description=family.documentation)
    if family.type == "counter":
        m.sum.CopyFrom(Sum(data_points=_number_points(family, now, "_total"),
                           aggregation_temporality=CUMULATIVE, is_monotonic=True))
    elif family.type == "gauge":
        m.gauge.CopyFrom(Gauge(data_points=_number_points(family, now, "")))
    elif family.type == "histogram":
        m.histogram.CopyFrom(Histogram(data_points=_histogram_points(family, now),
                                       aggregation_temporality=CUMULATIVE))
    else:
        return None
    return m


def genai_view(m: metrics_pb2.Metric, view: GenAiView, deployments: Mapping[str, tuple[str, Any]],
               ) -> metrics_pb2.Metric:
    """A copy of the converted ``strata_*`` metric under its GenAI name, each point with GenAI attributes."""
    from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

    g = Metric()
    g.CopyFrom(m)
    g.name, g.unit, g.description = view.name, view.unit, view.description
    kind = g.WhichOneof("data")
    assert kind is not None  # convert() always sets one
    for point in getattr(g, kind).data_points:
        labels = {kv.key: kv.value.string_value for kv in point.attributes}
        del point.attributes[:]
        point.attributes.extend(_attrs(genai_attributes(labels, deployments, view)))
    return g


def export_request(families: Iterable[Family], resource: Mapping[str, str],
                   deployments: Mapping[str, tuple[str, Any]] | None, now: int | None = None) -> bytes:
    """An ``ExportMetricsServiceRequest``: every family, and the GenAI views when ``deployments`` is given."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
    from opentelemetry.proto.metrics.v1.metrics_pb2 import ResourceMetrics, ScopeMetrics
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    now = now or time.time_ns()
    metrics = []
    for family in families:
        if (m := convert(family, now)) is None:
            continue
        metrics.append(m)
        if (view := GENAI.get(family.name)) is not None and deployments is not None:
            metrics.append(genai_view(m, view, deployments))
    scope = ScopeMetrics(scope=InstrumentationScope(name="strata", version=__version__), metrics=metrics)
    rm = ResourceMetrics(resource=Resource(attributes=_attrs(resource)), scope_metrics=[scope])
    return bytes(ExportMetricsServiceRequest(resource_metrics=[rm]).SerializeToString())


class MetricsExporter:
    """The ``otlp-metrics`` loop's step: collect, encode (on a thread), post. No retries: the next export is
    cumulative; a failure is logged and counted in ``strata_metrics_export_failures_total``."""

    def __init__(self, registry: CollectorRegistry, url: str, otlp: OtlpSettings, cfg: MetricsSettings,
                 service_name: str, deployments: Deployments, on_failure: Callable[[], object]) -> None:
        self.registry, self.url, self.otlp, self.cfg = registry, url, otlp, cfg
        self.deployments, self.on_failure = deployments, on_failure
        self.resource = {"service.name": service_name, "service.version": __version__,
                         "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
                         "telemetry.sdk.name": "strata"}
        self.client: httpx.AsyncClient | None = None
        self.sent = 0

    def encode(self) -> bytes:
        families = [f for f in self.registry.collect() if f.name.startswith("strata_")]
        body = export_request(families, self.resource, dict(self.deployments()) if self.cfg.genai else None)
        return gzip.compress(body, compresslevel=1) if self.otlp.compression == "gzip" else body

    async def step(self) -> None:
        import httpx

        if self.client is None:
            headers = {"content-type": "application/x-protobuf", **self.otlp.headers}
            if self.otlp.compression == "gzip":
                headers["content-encoding"] = "gzip"
            self.client = httpx.AsyncClient(headers=headers, timeout=self.otlp.timeout)
        body = await asyncio.to_thread(self.encode)
        try:
            r = await self.client.post(self.url, content=body)
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if r.status_code < 300:
                self.sent += 1
                return
            problem = f"HTTP {r.status_code}: {r.text[:200]}"
        self.on_failure()
        log.warning("OTLP metrics export to %s failed (the next one carries the totals): %s", self.url, problem)

    async def close(self) -> None:
        """One last export (the final totals), then the client closes."""
        try:
            await self.step()
        finally:
            if self.client is not None:
                await self.client.aclose()
