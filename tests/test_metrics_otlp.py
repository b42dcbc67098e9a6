"""Metrics by OTLP/HTTP, as a collector receives them: the same series as ``/metrics`` (cumulative sums and
histograms), plus the OpenTelemetry GenAI metrics (``gen_ai.server.request.duration``,
``gen_ai.client.token.usage``, ...) with their attributes.

The receiver is a small real HTTP server that decodes what arrives with the official protobuf definitions
(``opentelemetry-proto``), as an OpenTelemetry Collector would.
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from strata.observe.metrics import LATENCY_BUCKETS
from strata.observe.metrics_export import resolve_metrics_endpoint
from strata.observe.tracing import OtlpSettings
from tests.test_traffic import chat, dep, eventually, gateway, metric, route
from tests.upstreams import FaultyUpstream, free_port


class MetricsReceiver:
    """An OTLP/HTTP metrics receiver on loopback: the latest export, decoded, by metric name."""

    def __init__(self) -> None:
        self.port = free_port()
        self.exports: list[ExportMetricsServiceRequest] = []
        self.fail_next = 0  # answer 503 to this many exports first

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=503)
        body = await request.read()
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        assert request.headers["content-type"] == "application/x-protobuf"
        self.exports.append(ExportMetricsServiceRequest.FromString(body))
        return web.Response(status=200, content_type="application/x-protobuf")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/metrics", self._metrics)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await self.runner.cleanup()

    def latest(self) -> dict[str, Any]:
        """Metric name -> Metric message, from the newest export."""
        if not self.exports:
            return {}
        return {m.name: m for rm in self.exports[-1].resource_metrics for sm in rm.scope_metrics
                for m in sm.metrics}

    def resource(self) -> dict[str, str]:
        return {kv.key: kv.value.string_value for kv in self.exports[-1].resource_metrics[0].resource.attributes}


def attrs(point: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in point.attributes}


def point(metric: Any, kind: str, **want: str) -> Any:
    """The one data point of ``metric`` whose attributes include ``want``."""
    found = [p for p in getattr(metric, kind).data_points if want.items() <= attrs(p).items()]
    assert len(found) == 1, (want, [attrs(p) for p in getattr(metric, kind).data_points])
    return found[0]


@pytest.fixture
async def receiver() -> AsyncIterator[MetricsReceiver]:
    r = MetricsReceiver()
    await r.start()
    yield r
    await r.stop()


def settings(receiver: MetricsReceiver) -> dict[str, Any]:
    """Tracing off: the metrics go to tracing.otlp's collector all the same."""
    return {"tracing": {"enabled": False, "otlp": {"endpoint": receiver.endpoint, "timeout": 5}},
            "metrics": {"export_interval": 0.05}}


async def test_the_collector_gets_the_same_counts_as_metrics_and_the_genai_metrics(
        upstream: FaultyUpstream, receiver: MetricsReceiver, tmp_path: Path) -> None:
    bad = {**route(dep("d2", upstream, "err500"), retries=0), "name": "bad"}
    async with gateway(tmp_path, route(dep("d1", upstream, "ok")), bad, **settings(receiver)) as client:
        for _ in range(3):
            assert (await chat(client)).status_code == 200
        assert (await chat(client, "bad")).status_code >= 500
        async with client.stream("POST", "/v1/chat/completions",
                                 json={"model": "m", "stream": True,
                                       "messages": [{"role": "user", "content": "hi"}]}) as r:
            assert r.status_code == 200
            [_ async for _ in r.aiter_lines()]
        text = (await client.get("/metrics")).text
        scraped = sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                      if s.name == "strata_requests_total" and s.labels.get("deployment") == "d1")
        assert scraped == 4

        def four() -> bool:
            m = receiver.latest().get("strata_requests")
            return m is not None and any(p.as_double == 4 for p in m.sum.data_points)

        await eventually(four, "an export with the 4 requests")
        got = receiver.latest()
    requests = got["strata_requests"]
    assert requests.sum.is_monotonic and requests.sum.aggregation_temporality == 2  # cumulative
    p = point(requests, "sum", route="m", deployment="d1", status="200")
    assert p.as_double == scraped and 0 < p.start_time_unix_nano < p.time_unix_nano

    duration = point(got["strata_request_duration_seconds"], "histogram", route="m", deployment="d1")
    assert duration.count == 4 and sum(duration.bucket_counts) == 4
    assert list(duration.explicit_bounds) == [float(b) for b in LATENCY_BUCKETS]
    assert got["strata_request_duration_seconds"].unit == "s"

    genai = got["gen_ai.server.request.duration"]
    assert genai.unit == "s"
    g = point(genai, "histogram", **{"gen_ai.request.model": "m"})
    assert attrs(g) == {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "gen_ai.response.model": "ok",
                        "gen_ai.provider.name": "openai", "strata.route": "m", "strata.deployment": "d1"}
    assert g.count == 4
    assert point(got["gen_ai.server.time_to_first_token"], "histogram", **{"gen_ai.request.model": "m"}).count == 1
    tokens = got["gen_ai.client.token.usage"]
    assert tokens.unit == "{token}"
    for kind in ("input", "output"):
        t = point(tokens, "histogram", **{"gen_ai.token.type": kind})
        assert t.count == 4 and t.sum > 0 and attrs(t)["gen_ai.operation.name"] == "chat"
    attempts = got["gen_ai.client.operation.duration"]  # Strata as the engines' client: one point per outcome
    ok = point(attempts, "histogram", **{"strata.deployment": "d1"})
    assert ok.count == 4 and "error.type" not in attrs(ok)
    assert attrs(ok)["gen_ai.request.model"] == "ok" and attrs(ok)["strata.route"] == "m"
    failed = point(attempts, "histogram", **{"strata.deployment": "d2"})
    assert failed.count == 1 and attrs(failed)["error.type"] not in ("", "ok")
    assert attrs(failed)["strata.route"] == "bad"
    assert receiver.resource()["service.name"] == "strata"


async def test_a_failed_export_is_counted_and_the_next_one_carries_the_totals(
        upstream: FaultyUpstream, receiver: MetricsReceiver, tmp_path: Path) -> None:
    receiver.fail_next = 3
    async with gateway(tmp_path, route(dep("d1", upstream, "ok")), **settings(receiver)) as client:
        assert (await chat(client)).status_code == 200
        await eventually(lambda: receiver.exports, "an export after the collector recovers")
        failures = await metric(client, "strata_metrics_export_failures_total")
        assert failures is not None and failures >= 3
        assert (await chat(client)).status_code == 200

        def both() -> bool:
            m = receiver.latest().get("strata_requests")
            return m is not None and any(p.as_double == 2 for p in m.sum.data_points)

        await eventually(both, "an export with both requests")


def test_the_metrics_go_beside_the_traces() -> None:
    """The collector tracing.otlp names, or OpenTelemetry's environment variables, as the SDKs read them."""
    assert resolve_metrics_endpoint(OtlpSettings(endpoint="http://c:4318"), {}) == "http://c:4318/v1/metrics"
    assert resolve_metrics_endpoint(OtlpSettings(endpoint="http://c:6006/v1/traces"), {}) == \
        "http://c:6006/v1/metrics"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://e:4318/"}
    assert resolve_metrics_endpoint(OtlpSettings(), env) == "http://e:4318/v1/metrics"
    env["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"] = "http://m:9/custom"
    assert resolve_metrics_endpoint(OtlpSettings(), env) == "http://m:9/custom"
    assert resolve_metrics_endpoint(OtlpSettings(), {}) is None


async def test_the_final_counts_go_out_on_shutdown(
        upstream: FaultyUpstream, receiver: MetricsReceiver, tmp_path: Path) -> None:
    """An interval longer than the gateway's life: the only export is the one shutdown sends."""
    cfg = settings(receiver)
    cfg["metrics"] = {"export_interval": 3600}
    async with gateway(tmp_path, route(dep("d1", upstream, "ok")), **cfg) as client:
        for _ in range(2):
            assert (await chat(client)).status_code == 200
        assert receiver.exports == []
    assert len(receiver.exports) == 1
    assert point(receiver.latest()["strata_requests"], "sum", deployment="d1").as_double == 2
