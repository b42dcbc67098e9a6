"""Tracing as an operator sees it: every request is a trace whose spans are the pipeline's stages and the
engine attempts (OpenTelemetry GenAI attributes), continued from the client's ``traceparent``, exported by
OTLP/HTTP to a receiving server, and browsable in Strata (``GET /admin/traces/{id}``) with no collector.

The OTLP receiver is a small real HTTP server started by the test, which decodes what arrives with the
OpenTelemetry protobuf definitions (``opentelemetry-proto``), as a collector would.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from strata.pipeline.stages import STAGES
from tests.servers import StrataProcess, cli, finished, ledger_rows, openai_route, wait_for
from tests.test_traffic import FAST_RETRY, chat, dep, eventually, gateway, route
from tests.upstreams import FaultyUpstream, free_port


class Receiver:
    """An OTLP/HTTP trace receiver on loopback: every span it was sent, decoded."""

    def __init__(self) -> None:
        self.port = free_port()
        self.spans: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.fail_next = 0  # answer 503 to this many requests first

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _traces(self, request: web.Request) -> web.Response:
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=503, headers={"Retry-After": "0"})
        body = await request.read()  # aiohttp inflates a gzip body itself
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        assert request.headers["content-type"] == "application/x-protobuf"
        msg = ExportTraceServiceRequest.FromString(body)
        for rs in msg.resource_spans:
            self.resources.append({kv.key: _value(kv.value) for kv in rs.resource.attributes})
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append({"trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                                       "parent_id": s.parent_span_id.hex() or None, "name": s.name, "kind": s.kind,
                                       "status": s.status.code, "start": s.start_time_unix_nano,
                                       "end": s.end_time_unix_nano,
                                       "attributes": {kv.key: _value(kv.value) for kv in s.attributes}})
        return web.Response(status=200, content_type="application/x-protobuf")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await self.runner.cleanup()

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["trace_id"] == trace_id]


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind)


@pytest.fixture
async def receiver() -> Any:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
def failing() -> Iterator[FaultyUpstream]:
    with FaultyUpstream("bad") as up:
        up.mode = "err500"
        yield up


def tracing(receiver: Receiver | None = None) -> dict[str, Any]:
    cfg: dict[str, Any] = {"enabled": True, "export_interval": 0.05}
    if receiver is not None:
        cfg["otlp"] = {"endpoint": receiver.endpoint, "timeout": 5}
    return cfg


STAGE_NAMES = [s.name for s in STAGES]


async def test_a_fallback_is_one_trace_with_a_span_per_stage_and_attempt(
        upstream: FaultyUpstream, failing: FaultyUpstream, receiver: Receiver, tmp_path: Path) -> None:
    m = route(dep("bad", failing, "ok"), dep("good", upstream, "ok", role="fallback"), retries=0, **FAST_RETRY)
    async with gateway(tmp_path, m, tracing=tracing(receiver)) as client:
        r = await chat(client, rid="traced-1", max_tokens=3)
        assert r.status_code == 200, r.text
        trace_id = r.headers["x-strata-trace-id"]
        assert len(trace_id) == 32
        spans = await eventually(lambda: _spans(receiver, trace_id, 12), "the trace at the OTLP receiver")
        shown = (await client.get("/admin/traces/traced-1")).json()
    names = [s["name"] for s in spans]
    root = next(s for s in spans if s["parent_id"] is None)
    assert root["name"] == "chat m" and root["kind"] == 2
    a = root["attributes"]
    assert (a["gen_ai.operation.name"], a["gen_ai.request.model"], a["strata.route"]) == ("chat", "m", "m")
    assert a["strata.deployment"] == "good" and a["http.response.status_code"] == 200
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["strata.request_id"] == "traced-1"
    assert receiver.resources[0]["service.name"] == "strata"
    stages = [s for s in spans if s["parent_id"] == root["span_id"]]
    assert [s["name"] for s in sorted(stages, key=lambda s: s["start"])] == STAGE_NAMES, names
    call = next(s for s in stages if s["name"] == "strata.call")
    attempts = sorted((s for s in spans if s["parent_id"] == call["span_id"]), key=lambda s: s["start"])
    assert [(s["attributes"]["strata.deployment"], s["status"], s["kind"]) for s in attempts] == [
        ("bad", 2, 3), ("good", 0, 3)]
    bad, good = attempts[0]["attributes"], attempts[1]["attributes"]
    assert (bad["strata.outcome"], bad["error.type"]) == ("bad_gateway", "bad_gateway")
    assert bad["http.response.status_code"] == 500, "what the upstream answered (the client would see 502)"
    assert good["gen_ai.provider.name"] == "openai" and good["http.response.status_code"] == 200
    assert (good["gen_ai.usage.input_tokens"], good["gen_ai.usage.output_tokens"]) == (
        a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]), "usage on the model call that answered"
    assert "gen_ai.usage.input_tokens" not in bad
    # the same trace, browsable in Strata with no collector
    assert shown["trace_id"] == trace_id and shown["request_id"] == "traced-1"
    (tree_root,) = shown["tree"]
    assert [c["name"] for c in tree_root["children"]] == STAGE_NAMES
    call_node = next(c for c in tree_root["children"] if c["name"] == "strata.call")
    assert [c["attributes"]["strata.deployment"] for c in call_node["children"]] == ["bad", "good"]
    (row,) = [r for r in ledger_rows(tmp_path) if r["request_id"] == "traced-1"]
    assert row["trace_id"] == trace_id, "the ledger row names its trace"


async def _spans(receiver: Receiver, trace_id: str, n: int) -> list[dict[str, Any]]:
    spans = receiver.trace(trace_id)
    return spans if len(spans) >= n else []


async def test_the_clients_traceparent_is_continued(upstream: FaultyUpstream, receiver: Receiver,
                                                   tmp_path: Path) -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with gateway(tmp_path, route(dep("d", upstream, "ok")), tracing=tracing(receiver)) as client:
        r = await client.post("/v1/chat/completions", headers={"traceparent": f"00-{trace_id}-{parent}-01"},
                              json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True})
        assert r.status_code == 200 and "[DONE]" in r.text
        assert r.headers["x-strata-trace-id"] == trace_id
        spans = await eventually(lambda: _spans(receiver, trace_id, 11), "the continued trace")
        unsampled = await client.post("/v1/chat/completions",
                                      headers={"traceparent": f"00-{'1' * 32}-{parent}-00"},
                                      json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    root = next(s for s in spans if s["name"] == "chat m")
    assert root["parent_id"] == parent, "the root span is a child of the client's span"
    assert root["attributes"]["strata.stream"] is True
    assert "x-strata-trace-id" not in unsampled.headers, "the client said: not sampled"


async def test_a_refused_request_is_traced_with_its_status(upstream: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, route(dep("d", upstream, "ok")), tracing=tracing()) as client:
        r = await client.post("/v1/chat/completions", json={"model": "nope", "messages": []},
                              headers={"X-Request-Id": "refused-1"})
        assert r.status_code in (400, 404)
        shown = await eventually(lambda: _shown(client, "refused-1"), "the refused request's trace")
        listed = (await client.get("/admin/traces", params={"status": r.status_code})).json()["data"]
    (root,) = shown["tree"]
    assert root["attributes"]["http.response.status_code"] == r.status_code and root["status"] == 2
    assert [c["name"] for c in root["children"]] == ["strata.authenticate", "strata.parse", "strata.account"]
    assert [t["request_id"] for t in listed] == ["refused-1"]


async def _shown(client: Any, rid: str) -> dict[str, Any] | None:
    r = await client.get(f"/admin/traces/{rid}")
    return r.json() if r.status_code == 200 else None


async def test_tracing_off_makes_no_trace(upstream: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, route(dep("d", upstream, "ok")), tracing={"enabled": False}) as client:
        r = await chat(client)
        assert r.status_code == 200 and "x-strata-trace-id" not in r.headers
        missing = await client.get("/admin/traces")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "traces_disabled"


async def test_an_export_is_retried_when_the_collector_is_briefly_away(upstream: FaultyUpstream,
                                                                      receiver: Receiver, tmp_path: Path) -> None:
    receiver.fail_next = 1
    async with gateway(tmp_path, route(dep("d", upstream, "ok")), tracing=tracing(receiver)) as client:
        r = await chat(client)
        await eventually(lambda: _spans(receiver, r.headers["x-strata-trace-id"], 10), "the retried export")


async def test_the_database_store_keeps_traces_across_a_restart(upstream: FaultyUpstream, tmp_path: Path) -> None:
    """``store.backend: database``: a trace recorded by one gateway process is shown by the next one."""
    cfg = {**tracing(), "store": {"backend": "database", "max_traces": 100}}
    async with gateway(tmp_path, route(dep("d", upstream, "ok")), tracing=cfg) as client:
        r = await chat(client, rid="kept-1")
        assert r.status_code == 200
        await eventually(lambda: _shown(client, "kept-1"), "the trace in the database")
    async with gateway(tmp_path, route(dep("d", upstream, "ok")), tracing=cfg) as client:
        shown = await _shown(client, "kept-1")
        listed = (await client.get("/admin/traces")).json()["data"]
    assert shown is not None and shown["trace_id"] == r.headers["x-strata-trace-id"]
    assert [c["name"] for c in shown["tree"][0]["children"]] == STAGE_NAMES
    assert "kept-1" in [t["request_id"] for t in listed]


def test_strata_traces_list_and_show_a_served_request(upstream: FaultyUpstream, tmp_path: Path) -> None:
    """With the default settings a request is traced; `strata traces list` finds it and `show` draws its
    span tree (every stage, the engine attempt with its deployment)."""
    proc = StrataProcess(tmp_path, {"routes": [openai_route("ok", upstream.base_url, "ok")]}).start(60)
    try:
        reply = proc.client().chat.completions.with_raw_response.create(
            model="ok", messages=[{"role": "user", "content": "hi"}], extra_headers={"X-Request-Id": "cli-1"})
        trace_id = reply.headers["x-strata-trace-id"]
        listed = wait_for(lambda: json.loads(finished(cli(proc, "traces", "list", "--json")).stdout), 10,
                          "the trace in `strata traces list` (the store is written every export_interval)")
        shown = finished(cli(proc, "traces", "show", "cli-1"))
        missing = finished(cli(proc, "traces", "show", "no-such-request"))
    finally:
        proc.stop()
    assert [(t["request_id"], t["trace_id"], t["status"]) for t in listed][:1] == [("cli-1", trace_id, 200)]
    assert shown.returncode == 0, shown.stderr
    assert f"trace {trace_id}" in shown.stdout and "request cli-1" in shown.stdout
    for name in STAGE_NAMES:
        assert name in shown.stdout
    assert "deployment=ok-dep" in shown.stdout
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    assert "No trace 'no-such-request'" in missing.stderr


def test_the_otlp_bytes_decode_with_the_official_messages() -> None:
    """Strata writes OTLP protobuf itself (``observe.otlp.Encoder``); the official message classes read back
    every field and attribute type, long and non-ASCII values, negative ints, and an error status."""
    from strata.observe.otlp import Encoder
    from strata.observe.tracing import CLIENT, SERVER, Trace

    trace = Trace(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, "req-é")
    root = trace.start("chat m", None, SERVER, {"s": "ünïcode " * 40, "i": -3, "big": 2**40, "f": 0.25, "b": False,
                                                "arr": ("stop", "length")})
    child = trace.start("chat ok", root, CLIENT, {"strata.attempt": 1})
    child.end("upstream bad returned HTTP 500")
    root.end()
    encoder = Encoder("svc")
    for _ in range(2):  # the second time, attributes come from the encoder's cache
        msg = ExportTraceServiceRequest.FromString(encoder.encode([trace]))
        (rs,) = msg.resource_spans
        assert {kv.key: _value(kv.value) for kv in rs.resource.attributes}["service.name"] == "svc"
        (ss,) = rs.scope_spans
        assert ss.scope.name == "strata"
        got_root, got_child = ss.spans
        assert got_root.trace_id.hex() == trace.hex_id and got_root.parent_span_id.hex() == "00f067aa0ba902b7"
        assert (got_root.name, got_root.kind, got_root.start_time_unix_nano, got_root.end_time_unix_nano) == (
            "chat m", SERVER, root.start_ns, root.end_ns)
        assert {kv.key: _value(kv.value) for kv in got_root.attributes} == {
            "s": "ünïcode " * 40, "i": -3, "big": 2**40, "f": 0.25, "b": False, "arr": ["stop", "length"]}
        assert got_child.parent_span_id == got_root.span_id and got_child.kind == CLIENT
        assert (got_child.status.code, got_child.status.message) == (2, "upstream bad returned HTTP 500")
        assert got_root.status.code == 0
