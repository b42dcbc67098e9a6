"""The real ``strata`` command in a subprocess: keys, usage, finding the running server from anywhere, and
one-line errors for bad input."""

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

from strata.store.db import open_database
from tests.servers import ADMIN_KEY, StrataProcess, openai_route, wait_for
from tests.upstreams import FaultyUpstream

TIMEOUT = 60


def strata(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    return subprocess.run([sys.executable, "-m", "strata", *args], capture_output=True, text=True,
                          env={**clean, **(env or {})}, timeout=TIMEOUT, cwd=cwd)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data dir holding a Strata database, as ``strata up`` leaves it."""
    open_database(f"sqlite:///{tmp_path / 'strata.db'}").dispose()
    return tmp_path


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


def test_keys_create_list_revoke(data_dir: Path) -> None:
    dd = ("--data-dir", str(data_dir))
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


def test_key_expiry_option(data_dir: Path) -> None:
    dd = ("--data-dir", str(data_dir))
    created = ok_json("keys", "create", "temp", "--expires-in-days", "1.5", *dd)
    assert created["expires_at"] is not None
    assert_one_line_error(strata("keys", "create", "forever?", "--expires-in-days", "0", *dd), "expires")
    assert [k["name"] for k in ok_json("keys", "list", *dd)] == ["temp"]


def test_key_for_an_unknown_route_is_refused(data_dir: Path) -> None:
    p = strata("keys", "create", "svc", "--route", "smollm3", "--data-dir", str(data_dir))
    assert_one_line_error(p, "smollm3", "smollm2")
    assert ok_json("keys", "list", "--json", "--data-dir", str(data_dir)) == []


def test_revoke_unknown_key_is_one_line_error(data_dir: Path) -> None:
    p = strata("keys", "revoke", "no-such-id", "--data-dir", str(data_dir))
    assert_one_line_error(p, "no-such-id")


def test_usage_on_empty_ledger_is_zero(data_dir: Path) -> None:
    report = ok_json("usage", "--by", "team", "--since", "7d", "--data-dir", str(data_dir))
    assert report["groups"] == []
    assert report["totals"] == {"requests": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                "cost_usd": 0}


@pytest.mark.parametrize(("args", "needle"), [
    (("--since", "7x"), "7x"), (("--since", "1000000d"), "1000000d"), (("--by", "colour"), "colour"),
])
def test_usage_bad_argument_is_one_line_error(data_dir: Path, args: tuple[str, ...], needle: str) -> None:
    assert_one_line_error(strata("usage", *args, "--data-dir", str(data_dir)), needle)


@pytest.mark.parametrize("command", [("usage",), ("keys", "list"), ("keys", "create", "svc"), ("cost", "report")])
def test_a_data_dir_without_a_database_is_refused_not_created(tmp_path: Path, command: tuple[str, ...]) -> None:
    empty = tmp_path / "typo"
    line = assert_one_line_error(strata(*command, "--data-dir", str(empty)), f"no Strata database at {empty}")
    assert "strata up" in line and "--data-dir" in line
    assert not empty.exists()


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


def test_commands_from_another_directory_find_the_running_server_and_its_data(upstream: FaultyUpstream,
                                                                              tmp_path: Path) -> None:
    """`strata up` records where it serves; `strata usage`, `keys list`, `routes list` run elsewhere (no
    STRATA_* variables) find that server and its database, and say what to set once nothing runs."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = StrataProcess(tmp_path / "project" / ".strata", {"routes": [openai_route("ok", upstream.base_url, "ok")]},
                         env={"HOME": str(home), "PATH": "/usr/bin:/bin"})  # as under `make up`: no .venv/bin
    proc.start(60)
    try:
        here = {"HOME": str(home)}
        oai = proc.client()
        for _ in range(3):
            oai.chat.completions.create(model="ok", messages=[{"role": "user", "content": "hi"}])
        assert proc.admin("POST", "/admin/keys", json={"name": "search-svc", "team": "search"}).status_code == 200

        def usage_total() -> int | None:
            p = strata("usage", "--json", env=here, cwd=elsewhere)
            assert p.returncode == 0, p.stderr
            return json.loads(p.stdout)["totals"]["requests"] if json.loads(p.stdout)["totals"]["requests"] >= 3 \
                else None

        assert wait_for(usage_total, 10, "the three requests in `strata usage`") == 3
        keys = json.loads(strata("keys", "list", "--json", env=here, cwd=elsewhere).stdout)
        assert [k["name"] for k in keys] == ["search-svc"]
        routes = strata("routes", "list", "--json", "--key", ADMIN_KEY, env=here, cwd=elsewhere)
        assert routes.returncode == 0, routes.stderr
        assert [r["name"] for r in json.loads(routes.stdout)] == ["ok"]
        assert_one_line_error(strata("routes", "list", env=here, cwd=elsewhere), "STRATA_ADMIN_KEY")
        assert not (elsewhere / ".strata").exists()

        banner = {line.split()[0]: line.strip() for line in proc.log().splitlines()
                  if line.startswith("  ") and line.split()[0] in ("source", "export", "curl")}
        assert banner["source"].startswith(f"source {Path(sys.executable).parent / 'activate'}")
        assert f"STRATA_URL={proc.url}" in banner["export"]
        assert '"Authorization: Bearer $STRATA_KEY"' in banner["curl"]
        script = "\n".join(["set -e", banner["source"], "strata version >&2", banner["export"],
                            banner["curl"] + " -s -o /dev/null -w '%{http_code}'"])
        pasted = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                                env={"HOME": str(home), "PATH": "/usr/bin:/bin", "STRATA_ADMIN_KEY": ADMIN_KEY})
        assert (pasted.stdout, pasted.returncode) == ("200", 0), pasted.stdout + pasted.stderr
    finally:
        assert proc.stop() in (0, -15)

    assert_one_line_error(strata("routes", "list", "--key", ADMIN_KEY, env=here, cwd=elsewhere),
                          "no running Strata found", "STRATA_URL")
    assert json.loads(strata("usage", "--json", env=here, cwd=elsewhere).stdout)["totals"]["requests"] == 4, \
        "the data outlives the server: the three requests and the pasted curl"
    nobody = {"HOME": str(tmp_path / "nobody")}
    for command in (("usage",), ("keys", "list")):
        assert_one_line_error(strata(*command, env=nobody, cwd=elsewhere), "--data-dir", "STRATA_DATA_DIR")
    assert not (elsewhere / ".strata").exists() and not (tmp_path / "nobody").exists()
