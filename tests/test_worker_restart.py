"""A local engine worker that dies is restarted by the gateway; its in-flight stream fails cleanly."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import needs_models
from tests.servers import StrataProcess, wait_for

pytestmark = needs_models

CONFIG = {"routes": [{"name": "smollm2", "deployments": [
    {"name": "smollm2-local", "engine": {"type": "llamacpp", "n_parallel": 2, "n_ctx": 2048}}]}]}
HELLO = [{"role": "user", "content": "Say hello to the world."}]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[StrataProcess]:
    proc = StrataProcess(tmp_path, CONFIG).start(ready_timeout=300)
    yield proc
    proc.stop()


def _engine(gateway: StrataProcess) -> dict[str, Any]:
    engine: dict[str, Any] = gateway.admin("GET", "/admin/engines").json()["smollm2-local"]
    return engine


def test_killed_worker_fails_the_stream_then_restarts(gateway: StrataProcess) -> None:
    client = gateway.client().with_options(timeout=30)
    old_pid = _engine(gateway)["pid"]
    # ignore_eos: the answer cannot end on its own before the kill
    stream = client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=900, stream=True,
                                            extra_body={"ignore_eos": True})
    received: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
                if len(received) == 3:
                    os.kill(old_pid, signal.SIGKILL)
    err = info.value
    assert not isinstance(err, openai.APIConnectionError), f"the stream hung or was cut, not failed: {err!r}"
    assert err.type == "upstream_error"
    assert len(received) < 900

    readiness: list[int] = []

    def restarted() -> dict[str, Any] | None:
        readiness.append(httpx.get(gateway.url + "/readyz", timeout=10).status_code)
        engine = _engine(gateway)
        return engine if engine["ready"] and engine["pid"] != old_pid and readiness[-1] == 200 else None

    engine = wait_for(restarted, 120, "the worker to be restarted")
    assert engine["restarts"] >= 1
    assert 503 in readiness, "/readyz kept saying ready while the engine was down"

    reply = client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=8)
    assert reply.choices[0].message.content
    assert gateway.proc is not None and gateway.proc.poll() is None, "the gateway itself went down"
