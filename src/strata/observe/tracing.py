"""Request tracing: every request is a trace, every stage, attempt and internal call a span.

The spans follow OpenTelemetry's data model (W3C trace and span ids, kinds, attributes, status) and the GenAI
semantic conventions (``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``, ...),
and leave by OTLP/HTTP (``observe.otlp``) and into Strata's own trace store (``observe.trace_store``).

Why not the OpenTelemetry SDK's tracer on the request path: measured on this machine, the SDK costs about
26 µs per span (a request is about ten spans: 280 µs, more than the gateway's whole overhead), while a span
here is a small slotted object (about 2 µs). The finished trace is handed to a background thread
(``TraceExporter``) that batches traces to the sinks; the OTLP wire format is written there directly
(``observe.otlp``). A full queue drops traces (counted), never blocks a request.

W3C ``traceparent`` from the client is continued (same trace id, the client's span as the parent, its
sampled flag decides); without one, ``sample_rate`` decides per request (head sampling).
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

INTERNAL, SERVER, CLIENT = 1, 2, 3  # OTLP SpanKind
UNSET, OK, ERROR = 0, 1, 2  # OTLP StatusCode
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
Attr = str | int | float | bool | tuple[str, ...]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OtlpSettings(_Strict):
    """Export by OTLP/HTTP (protobuf) to any collector: Phoenix, Jaeger, Tempo, an OpenTelemetry Collector."""

    endpoint: str | None = Field(None, description="Collector base URL (…/v1/traces is appended unless the URL "
                                 "has a path); unset: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or "
                                 "OTEL_EXPORTER_OTLP_ENDPOINT from the environment, else no export")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers (e.g. an API key)")
    timeout: float = Field(10.0, gt=0, description="Seconds per export request")
    compression: Literal["gzip", "none"] = "gzip"


class TraceStoreSettings(_Strict):
    """Recent traces kept by Strata itself (bounded), for ``strata traces`` and ``GET /admin/traces/{id}``."""

    enabled: bool = True
    backend: Literal["memory", "database"] = Field(
        "memory", description="memory: each gateway process keeps its own newest traces; database: the "
        "traces table, shared by replicas and kept across restarts")
    max_traces: int = Field(10_000, ge=1, description="Traces kept; older ones are deleted")


class TracingSettings(_Strict):
    enabled: bool = Field(True, description="Record traces; false: no span is made (costs nothing)")
    sample_rate: float = Field(1.0, ge=0, le=1, description="Share of requests traced when the client sends no "
                               "traceparent (with one, its sampled flag decides)")
    service_name: str = Field("strata", min_length=1, description="OTLP resource attribute service.name")
    export_interval: float = Field(1.0, gt=0, description="Seconds between batches to the sinks")
    max_queue: int = Field(8192, ge=1, description="Finished traces waiting for export; beyond, dropped")
    store: TraceStoreSettings = TraceStoreSettings()
    otlp: OtlpSettings = OtlpSettings()


def _new_id(bits: int) -> int:
    return random.getrandbits(bits) or 1


class Span:
    """One operation of a trace. Times are ``time.time_ns()``; ``parent_id`` 0 is a root span."""

    __slots__ = ("name", "span_id", "parent_id", "kind", "start_ns", "end_ns", "attrs", "status", "message")

    def __init__(self, name: str, parent_id: int, kind: int = INTERNAL, attrs: dict[str, Attr] | None = None,
                 start_ns: int | None = None) -> None:
        self.name = name
        self.span_id = _new_id(64)
        self.parent_id = parent_id
        self.kind = kind
        self.start_ns = start_ns or time.time_ns()
        self.end_ns = 0
        self.attrs: dict[str, Attr] = attrs if attrs is not None else {}
        self.status = UNSET
        self.message: str | None = None

    def end(self, error: str | None = None) -> None:
        if not self.end_ns:
            self.end_ns = time.time_ns()
        if error is not None:
            self.status, self.message = ERROR, error

    def set(self, key: str, value: Attr | None) -> None:
        if value is not None:
            self.attrs[key] = value

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "span_id": f"{self.span_id:016x}",
                "parent_id": f"{self.parent_id:016x}" if self.parent_id else None, "kind": self.kind,
                "start_ns": self.start_ns, "end_ns": self.end_ns, "attributes": self.attrs,
                "status": self.status, "message": self.message}


class Trace:
    """The spans of one request (its root span first). ``remote_parent``: the client's span from its
    ``traceparent`` (0: none)."""

    __slots__ = ("trace_id", "remote_parent", "spans", "request_id")

    def __init__(self, trace_id: int, remote_parent: int, request_id: str) -> None:
        self.trace_id, self.remote_parent, self.request_id = trace_id, remote_parent, request_id
        self.spans: list[Span] = []

    @property
    def hex_id(self) -> str:
        return f"{self.trace_id:032x}"

    @property
    def root(self) -> Span:
        return self.spans[0]

    def start(self, name: str, parent: Span | None, kind: int = INTERNAL, attrs: dict[str, Attr] | None = None,
              ) -> Span:
        span = Span(name, parent.span_id if parent is not None else self.remote_parent, kind, attrs)
        self.spans.append(span)
        return span

    def traceparent(self, span: Span) -> str:
        """The W3C header an outgoing call carries to continue this trace under ``span``."""
        return f"00-{self.trace_id:032x}-{span.span_id:016x}-01"


class TraceSink(Protocol):
    """Where finished traces go, a batch at a time, on the exporter's thread."""

    def export(self, traces: Sequence[Trace]) -> None: ...

    def close(self) -> None: ...


class Tracer:
    """Starts traces (``begin``) and hands finished ones to the exporter (``finish``). With tracing off, or a
    request not sampled, ``begin`` returns None and the request makes no span at all."""

    def __init__(self, cfg: TracingSettings, exporter: TraceExporter | None, store: Any = None) -> None:
        self.cfg = cfg
        self.exporter = exporter
        self.store = store  # observe.trace_store.TraceStore, when traces are kept in Strata's database

    @property
    def active(self) -> bool:
        return self.cfg.enabled and self.exporter is not None

    def begin(self, traceparent: str | None, request_id: str) -> Trace | None:
        if not self.active:
            return None
        if traceparent is not None and (m := TRACEPARENT.match(traceparent.strip().lower())) is not None:
            trace_id, parent, flags = int(m.group(1), 16), int(m.group(2), 16), int(m.group(3), 16)
            if trace_id and parent:
                return Trace(trace_id, parent, request_id) if flags & 1 else None
        if self.cfg.sample_rate < 1 and random.random() >= self.cfg.sample_rate:
            return None
        return Trace(_new_id(128), 0, request_id)

    def finish(self, trace: Trace) -> None:
        assert self.exporter is not None
        self.exporter.submit(trace)


class TraceExporter:
    """A daemon thread that drains finished traces every ``interval`` seconds (or sooner, once a batch is
    full) to each sink. ``submit`` is a deque append: safe from the event loop, never blocking."""

    BATCH = 512

    def __init__(self, sinks: list[TraceSink], interval: float, max_queue: int, on_drop: Any = None) -> None:
        self.sinks = sinks
        self.interval = interval
        self.max_queue = max_queue
        self.on_drop = on_drop
        self.queue: deque[Trace] = deque()
        self.dropped = 0
        self.exported = 0
        self._wake = threading.Event()
        self._stop = False
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="strata-trace-export", daemon=True)
            self._thread.start()

    def submit(self, trace: Trace) -> None:
        if len(self.queue) >= self.max_queue:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop()
            return
        self.queue.append(trace)
        if len(self.queue) >= self.BATCH:
            self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Export what is queued now (from any thread); False if it took longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.queue or not self._idle.is_set():
            if self._thread is None or not self._thread.is_alive():
                self._drain()
                return True
            self._wake.set()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._drain()
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing trace sink %s", type(sink).__name__)

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.interval)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        self._idle.clear()
        try:
            while self.queue:
                batch = [self.queue.popleft() for _ in range(min(self.BATCH, len(self.queue)))]
                for sink in self.sinks:
                    try:
                        sink.export(batch)
                    except Exception:  # one sink's failure must not stop the others, nor the thread
                        log.exception("trace sink %s failed on %d traces", type(sink).__name__, len(batch))
                self.exported += len(batch)
        finally:
            self._idle.set()
