"""Strata's traces at a real OTLP-receiving server: Arize Phoenix, started by the test from its own venv
(``make test`` installs a pinned Phoenix in ``.venv-phoenix``; without it these tests skip, saying why).

Strata exports by OTLP/HTTP (protobuf, gzip) to Phoenix's ``/v1/traces``, and the test reads the spans back
through Phoenix's REST API, as an operator's tooling would: names, parent/child links, status and every span
attribute. Phoenix keeps neither the OTLP resource nor the span kind, so ``service.name`` and the kinds are
asserted in ``test_tracing`` against a receiver that decodes the raw protobuf.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from strata.pipeline.stages import STAGES
from tests.test_traffic import FAST_RETRY, chat, dep, eventually, gateway, route
from tests.upstreams import FaultyUpstream, free_port

PHOENIX_VENV = Path(__file__).resolve().parents[1] / ".venv-phoenix"
STAGE_NAMES = [s.name for s in STAGES]


def _not_installed() -> str | None:
    """Why Phoenix can't be started here, or None."""
    if any(PHOENIX_VENV.glob(".installed-*")) and (PHOENIX_VENV / "bin" / "phoenix").exists():
        return None
    why = "Arize Phoenix is not installed in .venv-phoenix (`make test` installs it)"
    log = PHOENIX_VENV / "install.log"
    if log.exists():
        lines = log.read_text(errors="replace").strip().splitlines()
        why += f"; its install failed: {lines[-1] if lines else 'see ' + str(log)}"
    return why


class Phoenix:
    """``phoenix serve`` on free loopback ports, with its working directory (its SQLite database) in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "phoenix.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180.0) -> Phoenix:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OTEL_"))}
        env.update(PHOENIX_WORKING_DIR=str(self.workdir), PHOENIX_HOST="127.0.0.1", PHOENIX_PORT=str(self.port),
                   PHOENIX_GRPC_PORT=str(free_port()), PHOENIX_TELEMETRY_ENABLED="false",
                   PHOENIX_LOG_MIGRATIONS="false", PHOENIX_ALLOW_EXTERNAL_RESOURCES="false")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([str(PHOENIX_VENV / "bin" / "phoenix"), "serve"], env=env, cwd=self.workdir,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout  # importing Phoenix alone takes 10-20 s on a busy 2-core machine
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"phoenix exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"phoenix not ready after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    async def trace(self, trace_id: str, n: int) -> list[dict[str, Any]]:
        """The trace's spans as Phoenix's REST API lists them, once it holds at least ``n`` (else [])."""
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            r = await client.get("/v1/projects/strata/spans", params={"trace_id": trace_id, "limit": 1000})
        if r.status_code == 404:  # the project (the service.name Strata sends) appears with its first span
            return []
        assert r.status_code == 200, r.text
        spans: list[dict[str, Any]] = r.json()["data"]
        return spans if len(spans) >= n else []


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    if (why := _not_installed()) is not None:
        pytest.skip(why)
    server = Phoenix(tmp_path_factory.mktemp("phoenix"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def failing() -> Iterator[FaultyUpstream]:
    with FaultyUpstream("bad") as up:
        up.mode = "err500"
        yield up


def tracing(phoenix: Phoenix) -> dict[str, Any]:
    return {"enabled": True, "export_interval": 0.05, "otlp": {"endpoint": phoenix.url, "timeout": 5}}


def children(spans: list[dict[str, Any]], parent: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in spans if s["parent_id"] == parent["context"]["span_id"]]


async def test_a_fallback_arrives_as_one_trace_of_stages_and_attempts(
        phoenix: Phoenix, upstream: FaultyUpstream, failing: FaultyUpstream, tmp_path: Path) -> None:
    m = route(dep("bad", failing, "ok"), dep("good", upstream, "ok", role="fallback"), retries=0, **FAST_RETRY)
    async with gateway(tmp_path, m, tracing=tracing(phoenix)) as client:
        r = await chat(client, rid="phoenix-1", max_tokens=3)
        assert r.status_code == 200, r.text
        trace_id = r.headers["x-strata-trace-id"]
        spans = await eventually(lambda: phoenix.trace(trace_id, 1 + len(STAGE_NAMES) + 2),
                                 "the trace in Phoenix", timeout=30)
    usage = r.json()["usage"]
    assert {s["context"]["trace_id"] for s in spans} == {trace_id}
    (root,) = [s for s in spans if s["parent_id"] is None]
    a = root["attributes"]
    assert root["name"] == "chat m" and root["status_code"] != "ERROR"
    assert (a["gen_ai.operation.name"], a["gen_ai.request.model"], a["strata.route"]) == ("chat", "m", "m")
    assert a["gen_ai.usage.input_tokens"] == usage["prompt_tokens"] > 0
    assert a["gen_ai.usage.output_tokens"] == usage["completion_tokens"] > 0
    assert (a["strata.request_id"], a["strata.deployment"], a["http.response.status_code"]) == ("phoenix-1", "good",
                                                                                                 200)
    stages = children(spans, root)
    assert sorted(s["name"] for s in stages) == sorted(STAGE_NAMES), "one span per pipeline stage, under the root"
    started = {s["name"]: s["start_time"] for s in stages}
    assert [started[n] for n in STAGE_NAMES] == sorted(started[n] for n in STAGE_NAMES), "in pipeline order"
    (call,) = [s for s in stages if s["name"] == "strata.call"]
    attempts = sorted(children(spans, call), key=lambda s: s["start_time"])
    assert [(s["name"], s["attributes"]["strata.deployment"], s["status_code"]) for s in attempts] == [
        ("chat ok", "bad", "ERROR"), ("chat ok", "good", "UNSET")]
    assert attempts[0]["attributes"]["strata.outcome"] == "bad_gateway"
    assert {s["attributes"]["gen_ai.provider.name"] for s in attempts} == {"openai"}
    assert len(spans) == 1 + len(stages) + len(attempts), [s["name"] for s in spans]


async def test_a_stream_continuing_the_clients_traceparent_arrives(phoenix: Phoenix, upstream: FaultyUpstream,
                                                                  tmp_path: Path) -> None:
    trace_id, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    async with gateway(tmp_path, route(dep("d", upstream, "ok")), tracing=tracing(phoenix)) as client:
        r = await client.post("/v1/chat/completions", headers={"traceparent": f"00-{trace_id}-{parent}-01"},
                              json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                                    "stream_options": {"include_usage": True}})
        assert r.status_code == 200 and "[DONE]" in r.text
        assert r.headers["x-strata-trace-id"] == trace_id
        spans = await eventually(lambda: phoenix.trace(trace_id, 1 + len(STAGE_NAMES) + 1),
                                 "the streamed request's trace in Phoenix", timeout=30)
    (root,) = [s for s in spans if s["name"] == "chat m"]
    assert root["parent_id"] == parent, "the root span is a child of the client's span"
    a = root["attributes"]
    assert a["strata.stream"] is True and a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert sorted(s["name"] for s in children(spans, root)) == sorted(STAGE_NAMES)
    (call,) = [s for s in children(spans, root) if s["name"] == "strata.call"]
    assert [s["attributes"]["strata.deployment"] for s in children(spans, call)] == ["d"]
