"""The real ``strata`` command in a subprocess: keys, usage, and one-line errors for bad input."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

TIMEOUT = 60


def strata(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    return subprocess.run([sys.executable, "-m", "strata", *args], capture_output=True, text=True,
                          env={**clean, **(env or {})}, timeout=TIMEOUT)


def ok_json(*args: str) -> Any:
    p = strata(*args, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def assert_one_line_error(p: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error:"), p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    dd = ("--data-dir", str(tmp_path))
    created = ok_json("keys", "create", "search-svc", "--team", "search", "--route", "smollm2", *dd)
    assert created["key"].startswith("sk-strata-")
    assert (created["name"], created["team"], created["allowed_routes"]) == ("search-svc", "search", ["smollm2"])

    (listed,) = ok_json("keys", "list", *dd)
    assert listed["id"] == created["id"] and listed["revoked"] is False
    assert datetime.fromisoformat(listed["created_at"]).tzinfo is not None
    assert "key" not in listed
    p = strata("keys", "list", *dd, env={"COLUMNS": "200"})
    assert created["key"] not in p.stdout and created["id"] in p.stdout

    p = strata("keys", "revoke", created["id"], *dd)
    assert p.returncode == 0, p.stderr
    assert created["id"] in p.stdout
    (listed,) = ok_json("keys", "list", *dd)
    assert listed["revoked"] is True


def test_key_expiry_option(tmp_path: Path) -> None:
    dd = ("--data-dir", str(tmp_path))
    created = ok_json("keys", "create", "temp", "--expires-in-days", "1.5", *dd)
    assert created["expires_at"] is not None
    assert_one_line_error(strata("keys", "create", "forever?", "--expires-in-days", "0", *dd), "expires")
    assert [k["name"] for k in ok_json("keys", "list", *dd)] == ["temp"]


def test_key_for_an_unknown_route_is_refused(tmp_path: Path) -> None:
    p = strata("keys", "create", "svc", "--route", "smollm3", "--data-dir", str(tmp_path))
    assert_one_line_error(p, "smollm3", "smollm2")
    assert ok_json("keys", "list", "--json", "--data-dir", str(tmp_path)) == []


def test_revoke_unknown_key_is_one_line_error(tmp_path: Path) -> None:
    p = strata("keys", "revoke", "no-such-id", "--data-dir", str(tmp_path))
    assert_one_line_error(p, "no-such-id")


def test_usage_on_empty_ledger_is_zero(tmp_path: Path) -> None:
    report = ok_json("usage", "--by", "team", "--since", "7d", "--data-dir", str(tmp_path))
    assert report["groups"] == []
    assert report["totals"] == {"requests": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                "cost_usd": 0}


@pytest.mark.parametrize(("args", "needle"), [
    (("--since", "7x"), "7x"), (("--since", "1000000d"), "1000000d"), (("--by", "colour"), "colour"),
])
def test_usage_bad_argument_is_one_line_error(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    assert_one_line_error(strata("usage", *args, "--data-dir", str(tmp_path)), needle)


def route(engine: dict[str, Any]) -> dict[str, Any]:
    return {"routes": [{"name": "r", "deployments": [{"name": "r-dep", "engine": engine}]}]}


UPSTREAM = {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
BAD_CONFIGS = {
    "unknown-field": ({**route(UPSTREAM), "server": {"prot": 8080}}, "server.prot"),
    "wrong-type": (route({"type": "llamacpp", "n_parallel": 0}), "n_parallel"),
    "bad-url": (route({**UPSTREAM, "base_url": "ftp://x"}), "base_url"),
    "no-routes": ({"routes": []}, "routes"),
    "missing-model": (route({"type": "llamacpp", "model": "/nonexistent/x.gguf"}), "/nonexistent/x.gguf"),
}
NEEDS_LLAMACPP = pytest.mark.skipif(importlib.util.find_spec("xllamacpp") is None,
                                    reason="without xllamacpp the missing package is reported before the model")
CASES = [pytest.param(c, marks=NEEDS_LLAMACPP if c == "missing-model" else ()) for c in BAD_CONFIGS]


@pytest.mark.parametrize("case", CASES)
def test_up_with_bad_config_fails_with_one_line(tmp_path: Path, case: str) -> None:
    config, needle = BAD_CONFIGS[case]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    p = strata("up", "--config", str(path), "--data-dir", str(tmp_path))
    assert p.returncode == 2, p.stderr
    assert_one_line_error(p, needle)


def test_up_with_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("routes:\n  - name: [unclosed\n")
    p = strata("up", "--config", str(path), "--data-dir", str(tmp_path))
    assert p.returncode == 2, p.stderr
    assert_one_line_error(p, str(path))


def test_up_with_missing_config_file_names_it(tmp_path: Path) -> None:
    p = strata("up", "--config", str(tmp_path / "nope.yaml"), "--data-dir", str(tmp_path))
    assert p.returncode == 2, p.stderr
    assert_one_line_error(p, "nope.yaml")


@pytest.mark.parametrize("command", [("up",), ("usage",)])
def test_bad_env_value_names_the_field(tmp_path: Path, command: tuple[str, ...]) -> None:
    p = strata(*command, "--data-dir", str(tmp_path), env={"STRATA_SERVER__PORT": "notaport"})
    assert p.returncode == 2, p.stderr
    assert_one_line_error(p, "server.port")


@pytest.mark.parametrize(("url", "needle"), [
    ("nonsense", "database.url"),
    ("nosuchdialect://x", "database.url"),
    ("postgresql://strata:hunter2@127.0.0.1:1/strata", "127.0.0.1:1"),
])
def test_bad_database_url_is_one_line_error(tmp_path: Path, url: str, needle: str) -> None:
    p = strata("usage", "--data-dir", str(tmp_path), env={"STRATA_DATABASE__URL": url})
    assert p.returncode == 2, p.stderr
    line = assert_one_line_error(p, needle)
    assert "hunter2" not in line
