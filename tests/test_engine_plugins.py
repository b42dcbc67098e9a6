"""A third-party engine, installed as its own package (tests/plugins/strata_echo_engine, by `make test`),
registered in the `strata.engines` entry-point group, configured with its own settings, serving a real
Strata through the official SDK."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.servers import StrataProcess, wait_for

if not any(ep.name == "echo" for ep in entry_points(group="strata.engines")):
    pytest.skip("the echo engine plugin is not installed (make test installs it: "
                "pip install -e tests/plugins/strata_echo_engine)", allow_module_level=True)

ASK = [{"role": "user", "content": "hello there"}]


def echo_route(**engine: Any) -> dict[str, Any]:
    return {"name": "echo", "deployments": [{"name": "echo-dep", "engine": {"type": "echo", **engine},
                                             "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}]}


@pytest.fixture(scope="module")
def echo_strata(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    proc = StrataProcess(tmp_path_factory.mktemp("echo-strata"),
                         {"routes": [echo_route(prefix="you said: ", model="parrot")],
                          "ledger": {"flush_interval": 0.05}})
    proc.start(ready_timeout=60)
    yield proc
    proc.stop()


def test_plugin_engine_answers_json(echo_strata: StrataProcess) -> None:
    client = echo_strata.client()
    raw = client.chat.completions.with_raw_response.create(model="echo", messages=ASK)
    reply = raw.parse()
    assert reply.choices[0].message.content == "you said: hello there"
    assert reply.model == "echo" and reply.usage is not None and reply.usage.prompt_tokens == 2
    text = client.completions.create(model="echo", prompt="abc def")
    assert text.choices[0].text == "you said: abc def" and text.id.startswith("cmpl-")

    rid = raw.headers["x-request-id"]
    row = wait_for(lambda: [r for r in echo_strata.ledger() if r["request_id"] == rid], 10, "the ledger row")[0]
    assert (row["engine"], row["deployment"], row["model"], row["status"]) == ("echo", "echo-dep", "parrot", 200)
    assert row["cost_usd"] == pytest.approx((2 * 1.0 + 4 * 2.0) / 1e6)  # priced like any deployment


def test_plugin_engine_streams(echo_strata: StrataProcess) -> None:
    chunks = list(echo_strata.client().chat.completions.create(
        model="echo", messages=ASK, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "you said: hello there"
    assert len([c for c in chunks if c.choices]) > 1  # streamed in pieces, not one block
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_plugin_capabilities_refuse_what_it_cannot_do(echo_strata: StrataProcess) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        echo_strata.client().embeddings.create(model="echo", input="hi")
    assert "embeddings" in exc.value.message


def test_plugin_engine_shows_in_admin_engines(echo_strata: StrataProcess) -> None:
    echo_strata.client().chat.completions.create(model="echo", messages=ASK)
    engines = wait_for(lambda: (r := echo_strata.admin("GET", "/admin/engines").json()).get("echo-dep", {})
                       .get("echoed") and r, 10, "the echo engine's health")
    assert engines["echo-dep"]["ready"] is True and engines["echo-dep"]["breaker"] == "closed"


def test_bad_plugin_setting_in_a_canary_names_the_field(echo_strata: StrataProcess) -> None:
    r = echo_strata.admin("POST", "/admin/routes/echo/canary", json={"traffic": 10, "engine": {"prefixx": "v2"}})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "engine.prefixx"


@pytest.mark.parametrize(("engine", "words"), [
    ({"prefix": 3}, ["routes.0.deployments.0.engine.prefix:", "valid string"]),
    ({"type": "ech0"}, ["routes.0.deployments.0.engine.type:", "unknown engine type 'ech0'",
                        "llamacpp, openai, sentence-transformers, echo"]),
])
def test_bad_engine_config_stops_startup_naming_the_field(tmp_path: Path, engine: dict[str, Any],
                                                          words: list[str]) -> None:
    proc = StrataProcess(tmp_path, {"routes": [echo_route(**engine)]})
    with pytest.raises(RuntimeError) as exc:
        proc.start(ready_timeout=60)
    assert proc.proc is not None and proc.proc.returncode == 2
    for w in words:
        assert w in str(exc.value)


def test_config_loads_without_engine_code() -> None:
    """Loading a config imports no engine's code: not llama.cpp, torch, aiohttp, nor a plugin's module."""
    probe = ("import sys; from strata.config.settings import load_settings; load_settings(None); "
             "print(sorted(m for m in ('xllamacpp', 'torch', 'sentence_transformers', 'aiohttp', "
             "'strata_echo_engine', 'strata.engines.local', 'strata.engines.http') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
