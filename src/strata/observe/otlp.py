"""Export traces by OTLP/HTTP (protobuf) to any collector: Phoenix, Jaeger, Tempo, an OpenTelemetry Collector.

Runs on the exporter's thread (``observe.tracing.TraceExporter``), one request per batch, the protobuf
bytes written directly (``encode``). Retries 429/502/503/504 and connection errors a few times with
backoff (``Retry-After`` honoured, bounded), then drops the batch with one warning and counts its spans.
"""

from __future__ import annotations

import gzip
import logging
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from strata import __version__
from strata.observe.tracing import OtlpSettings, Trace
from strata.observe.tracing import Span as TraceSpan

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


# --- the OTLP wire format, written directly ---------------------------------------------------------------
# Field numbers from opentelemetry-proto (trace/v1/trace.proto, common/v1/common.proto). Building the
# protobuf message objects cost about 118 µs per request of ~11 spans on this machine, on a thread that
# shares the GIL with the event loop; writing the bytes directly costs a fraction of it (bench in
# docs/benchmarks.md). tests/test_tracing.py decodes what is sent with the official message classes.

_pack_d = struct.Struct("<d").pack
_pack_q = struct.Struct("<Q").pack


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte, the length, the payload."""
    n = len(payload)
    return tag + (bytes((n,)) if n < 0x80 else _varint(n)) + payload


def _any(v: Any) -> bytes:
    """An AnyValue message."""
    if isinstance(v, str):
        return _field(b"\x0a", v.encode())
    if isinstance(v, bool):
        return b"\x10\x01" if v else b"\x10\x00"
    if isinstance(v, int):
        return b"\x18" + _varint(v & 0xFFFFFFFFFFFFFFFF)  # int64, two's complement
    if isinstance(v, float):
        return b"\x21" + _pack_d(v)
    if isinstance(v, list | tuple):
        return _field(b"\x2a", b"".join([_field(b"\x0a", _any(x)) for x in v]))
    return _field(b"\x0a", str(v).encode())


def _key_value(key: str, v: Any) -> bytes:
    """A KeyValue message."""
    return _field(b"\x0a", key.encode()) + _field(b"\x12", _any(v))


class Encoder:
    """Writes ExportTraceServiceRequest bytes. Most attributes repeat from span to span and request to request
    (operation, route, deployment, status…), so their encoded fields are cached, bounded: unique values
    (request ids, costs) churn through the cache without growing it."""

    MAX_CACHED = 4096

    def __init__(self, service_name: str) -> None:
        attrs = {"service.name": service_name, "service.version": __version__, "telemetry.sdk.name": "strata",
                 # Phoenix files traces by project: under the service's name, not "default"
                 "openinference.project.name": service_name}
        resource = b"".join(_field(b"\x0a", _key_value(k, v)) for k, v in attrs.items())
        self.resource = _field(b"\x0a", resource)
        self.scope = _field(b"\x0a", _field(b"\x0a", b"strata") + _field(b"\x12", __version__.encode()))
        self.cache: dict[tuple[str, type, Any], bytes] = {}

    def encode(self, traces: Sequence[Trace]) -> bytes:
        spans = [self.scope]
        for trace in traces:
            trace_id = b"\x0a\x10" + trace.trace_id.to_bytes(16, "big")
            spans.extend([_field(b"\x12", self._span(trace_id, s)) for s in trace.spans])
        return _field(b"\x0a", self.resource + _field(b"\x12", b"".join(spans)))

    def _span(self, trace_id: bytes, s: TraceSpan) -> bytes:
        parts = [trace_id, b"\x12\x08", s.span_id.to_bytes(8, "big")]
        if s.parent_id:
            parts += (b"\x22\x08", s.parent_id.to_bytes(8, "big"))
        parts += (_field(b"\x2a", s.name.encode()), b"\x30", bytes((s.kind,)),
                  b"\x39", _pack_q(s.start_ns), b"\x41", _pack_q(s.end_ns or s.start_ns))
        parts += [self._attribute(k, v) for k, v in s.attrs.items()]
        if s.status or s.message:
            status = (_field(b"\x12", s.message.encode()) if s.message else b"") + (
                b"\x18" + bytes((s.status,)) if s.status else b"")
            parts.append(_field(b"\x7a", status))
        return b"".join(parts)

    def _attribute(self, key: str, v: Any) -> bytes:
        """A Span.attributes field."""
        ck = (key, type(v), v)
        try:
            found = self.cache.get(ck)
        except TypeError:  # an unhashable value
            return _field(b"\x4a", _key_value(key, v))
        if found is None:
            if len(self.cache) >= self.MAX_CACHED:
                self.cache.clear()
            found = self.cache[ck] = _field(b"\x4a", _key_value(key, v))
        return found


def encode(traces: Sequence[Trace], service_name: str) -> bytes:
    """One ExportTraceServiceRequest with every span of ``traces``."""
    return Encoder(service_name).encode(traces)


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
        self.encoder = Encoder(service_name)
        self.sent = 0

    def export(self, traces: Sequence[Trace]) -> None:
        body = self.encoder.encode(traces)
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
