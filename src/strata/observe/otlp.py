"""Export traces by OTLP/HTTP (protobuf) to any collector: Phoenix, Jaeger, Tempo, an OpenTelemetry Collector.

Runs on the exporter's thread (``observe.tracing.TraceExporter``), one request per batch, built with the
``opentelemetry-proto`` message classes. Retries 429/502/503/504 and connection errors a few times with
backoff (``Retry-After`` honoured, bounded), then drops the batch with one warning and counts its spans.
"""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from strata import __version__
from strata.observe.tracing import OtlpSettings, Trace

log = logging.getLogger(__name__)
RETRY_STATUSES = {429, 502, 503, 504}
ATTEMPTS = 3


def resolve_endpoint(cfg: OtlpSettings, environ: Mapping[str, str]) -> str | None:
    """Where traces go: the config's endpoint, else OpenTelemetry's standard environment variables."""
    if cfg.endpoint:
        return _traces_url(cfg.endpoint)
    if environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    return None


def _traces_url(url: str) -> str:
    return url.rstrip("/") + "/v1/traces" if urlsplit(url).path in ("", "/") else url


def _value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, list | tuple):
        return AnyValue(array_value=ArrayValue(values=[_value(x) for x in v]))
    return AnyValue(string_value=str(v))


def encode(traces: Sequence[Trace], service_name: str) -> bytes:
    """One ExportTraceServiceRequest with every span of ``traces``."""
    spans = []
    for trace in traces:
        trace_id = trace.trace_id.to_bytes(16, "big")
        for s in trace.spans:
            spans.append(Span(
                trace_id=trace_id, span_id=s.span_id.to_bytes(8, "big"),
                parent_span_id=s.parent_id.to_bytes(8, "big") if s.parent_id else b"", name=s.name, kind=s.kind,  # type: ignore[arg-type]
                start_time_unix_nano=s.start_ns, end_time_unix_nano=s.end_ns or s.start_ns,
                attributes=[KeyValue(key=k, value=_value(v)) for k, v in s.attrs.items()],
                status=Status(code=s.status, message=s.message or "")))  # type: ignore[arg-type]
    resource = Resource(attributes=[KeyValue(key="service.name", value=_value(service_name)),
                                    KeyValue(key="telemetry.sdk.name", value=_value("strata")),
                                    KeyValue(key="service.version", value=_value(__version__)),
                                    # Phoenix files traces by project: under the service's name, not "default"
                                    KeyValue(key="openinference.project.name", value=_value(service_name))])
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=resource, scope_spans=[ScopeSpans(scope=InstrumentationScope(name="strata", version=__version__),
                                                   spans=spans)])])
    return request.SerializeToString()


class OtlpSink:
    """A trace sink posting each batch to an OTLP/HTTP endpoint."""

    def __init__(self, cfg: OtlpSettings, service_name: str,
                 on_failure: Callable[[int], object] | None = None) -> None:
        assert cfg.endpoint is not None
        self.url = cfg.endpoint
        self.cfg, self.service_name, self.on_failure = cfg, service_name, on_failure
        headers = {"content-type": "application/x-protobuf", **cfg.headers}
        if cfg.compression == "gzip":
            headers["content-encoding"] = "gzip"
        self.client = httpx.Client(headers=headers, timeout=cfg.timeout)
        self.sent = 0

    def export(self, traces: Sequence[Trace]) -> None:
        body = encode(traces, self.service_name)
        if self.cfg.compression == "gzip":
            body = gzip.compress(body, compresslevel=1)
        n = sum(len(t.spans) for t in traces)
        problem = ""
        for attempt in range(ATTEMPTS):
            try:
                r = self.client.post(self.url, content=body)
            except httpx.HTTPError as exc:
                problem, wait = f"{type(exc).__name__}: {exc}", 0.5 * 2 ** attempt
            else:
                if r.status_code < 300:
                    self.sent += n
                    return
                problem = f"HTTP {r.status_code}: {r.text[:200]}"
                if r.status_code not in RETRY_STATUSES:
                    break
                wait = _retry_after(r.headers.get("retry-after"), 0.5 * 2 ** attempt)
            if attempt < ATTEMPTS - 1:
                time.sleep(wait)
        log.warning("OTLP export to %s dropped %d spans: %s", self.url, n, problem)
        if self.on_failure is not None:
            self.on_failure(n)

    def close(self) -> None:
        self.client.close()


def _retry_after(header: str | None, default: float) -> float:
    try:
        return min(max(float(header), 0.0), 10.0) if header else default
    except ValueError:
        return default
