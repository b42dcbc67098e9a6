"""Secrets at rest: an upstream key given at run time is stored encrypted and still reaches the upstream.

In-process gateway (``tests.test_traffic.gateway``) with a real upstream whose ``echo-auth`` model answers
with the Authorization header it received; the SQLite file is read back table by table to show the key is
nowhere in plain text; ``strata secrets rotate`` through the real CLI; a full ``strata up`` run whose captured
log must not contain the key.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from strata.errors import ConfigError
from strata.governance.secrets import key_id, new_key
from strata.store.tables import Base, SecretRow
from tests.leaks import secret
from tests.servers import StrataProcess, openai_route, table_rows
from tests.test_traffic import chat, dep, gateway, route
from tests.upstreams import FaultyUpstream

SECRET = secret("sk-upstream-9f8e7d6c5b4a39281706f5e4d3c2b1a0")  # every value below: never in a log (tests.leaks)
CHANGED, ROTATED = secret("sk-new-1"), secret("sk-k2")
FROM_ENV, FROM_FILE = secret("sk-from-env"), secret("sk-from-file")
KEYED = {"engine": {"type": "openai", "model": "echo-auth", "api_key": SECRET}}


@pytest.fixture(scope="module")
def up() -> Any:
    with FaultyUpstream("keyed") as u:
        yield u


def database_text(data_dir: Path) -> str:
    """Every row of every table, as text."""
    return "\n".join(repr(row) for table in Base.metadata.sorted_tables for row in table_rows(data_dir, table))


async def put_keyed(client: httpx.AsyncClient, up: FaultyUpstream, route_name: str = "keyed") -> httpx.Response:
    body = {**KEYED, "engine": {**KEYED["engine"], "base_url": up.base_url}}
    r = await client.put(f"/admin/routes/{route_name}/deployments/{route_name}-dep", json=body)
    assert r.status_code == 200, r.text
    return r


async def answer(client: httpx.AsyncClient, model: str = "keyed") -> str:
    r = await chat(client, model)
    assert r.status_code == 200, r.text
    content: str = r.json()["choices"][0]["message"]["content"]
    return content


async def admin_text(client: httpx.AsyncClient, *paths: str) -> str:
    return "\n".join([(await client.get(p)).text for p in paths])


ADMIN_VIEWS = ("/admin/routes", "/admin/routes/keyed", "/admin/routes/keyed/changes", "/admin/engines",
               "/admin/events")


async def test_runtime_key_is_encrypted_at_rest_masked_in_views_and_reaches_the_upstream(
        up: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, route(dep("a", up))) as client:
        r = await put_keyed(client, up)
        assert SECRET not in r.text
        assert await answer(client) == f"Bearer {SECRET}"
        views = await admin_text(client, *ADMIN_VIEWS)
        assert SECRET not in views
        shown = (await client.get("/admin/routes/keyed")).json()["deployments"][0]["engine"]["api_key"]
        assert shown == f"sk-...{SECRET[-4:]}"
        change = (await client.get("/admin/routes/keyed/changes")).json()["data"][0]
        assert change["after"]["deployments"][0]["engine"]["api_key"] == "***"
    stored = database_text(tmp_path)
    assert SECRET not in stored and SECRET[10:30] not in stored
    assert "secret:routes/keyed/keyed-dep/engine.api_key" in stored  # the change holds a reference
    key_file = tmp_path / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    async with gateway(tmp_path, route(dep("a", up))) as client:  # replayed from the database after a restart
        assert await answer(client) == f"Bearer {SECRET}"


async def test_a_changed_key_replaces_the_stored_one(up: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, route(dep("a", up))) as client:
        await put_keyed(client, up)
        body = {"engine": {"type": "openai", "model": "echo-auth", "base_url": up.base_url, "api_key": CHANGED}}
        r = await client.put("/admin/routes/keyed/deployments/keyed-dep", json=body)
        assert r.status_code == 200, r.text
        assert await answer(client) == f"Bearer {CHANGED}"
    async with gateway(tmp_path, route(dep("a", up))) as client:
        assert await answer(client) == f"Bearer {CHANGED}"
    assert SECRET not in database_text(tmp_path) and CHANGED not in database_text(tmp_path)


async def test_a_patched_route_keeps_its_key(up: FaultyUpstream, tmp_path: Path) -> None:
    """A route-level change (not the deployment) records the route again: its key must survive it."""
    async with gateway(tmp_path, route(dep("a", up))) as client:
        await put_keyed(client, up)
        assert (await client.patch("/admin/routes/keyed", json={"retries": 1})).status_code == 200
    async with gateway(tmp_path, route(dep("a", up))) as client:
        assert await answer(client) == f"Bearer {SECRET}"


def strata(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    return subprocess.run([sys.executable, "-m", "strata", *args, "--data-dir", str(data_dir)], capture_output=True,
                          text=True, env={**base, **(env or {}), "COLUMNS": "200"}, timeout=60)


def key_ids(data_dir: Path) -> set[str]:
    engine = create_engine(f"sqlite:///{data_dir / 'strata.db'}")
    try:
        with engine.connect() as conn:
            return set(conn.scalars(select(SecretRow.key_id)))
    finally:
        engine.dispose()


async def test_rotation_with_the_key_file_keeps_secrets_readable(up: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, route(dep("a", up))) as client:
        await put_keyed(client, up)
        first = (tmp_path / "secret.key").read_text().split()
        rotated = strata(tmp_path, "secrets", "rotate", "--new-key")
        assert rotated.returncode == 0, rotated.stderr
        keys = (tmp_path / "secret.key").read_text().split()
        assert len(keys) == 2 and keys[1] == first[0]
        assert key_ids(tmp_path) == {key_id(keys[0])}
        listed = strata(tmp_path, "secrets", "list", "--json")
        assert "keyed-dep" in listed.stdout and SECRET not in listed.stdout
        body = {"engine": {"type": "openai", "model": "echo-auth", "base_url": up.base_url, "api_key": ROTATED}}
        assert (await client.put("/admin/routes/keyed/deployments/keyed-dep", json=body)).status_code == 200
    dropped = strata(tmp_path, "secrets", "rotate", "--drop-old")
    assert dropped.returncode == 0, dropped.stderr
    assert len((tmp_path / "secret.key").read_text().split()) == 1
    async with gateway(tmp_path, route(dep("a", up))) as client:
        assert await answer(client) == f"Bearer {ROTATED}"


async def test_rotation_with_keys_from_the_environment(up: FaultyUpstream, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = secret(new_key()), secret(new_key())
    monkeypatch.setenv("STRATA_SECRET_KEY", old)
    async with gateway(tmp_path, route(dep("a", up))) as client:
        await put_keyed(client, up)
    assert not (tmp_path / "secret.key").exists()
    assert key_ids(tmp_path) == {key_id(old)}
    rotated = strata(tmp_path, "secrets", "rotate", env={"STRATA_SECRET_KEY": f"{new},{old}"})
    assert rotated.returncode == 0, rotated.stderr
    assert key_ids(tmp_path) == {key_id(new)}
    monkeypatch.setenv("STRATA_SECRET_KEY", new)  # the old key is gone: the secret reads with the new one only
    async with gateway(tmp_path, route(dep("a", up))) as client:
        assert await answer(client) == f"Bearer {SECRET}"
    monkeypatch.setenv("STRATA_SECRET_KEY", old)  # a key that no longer opens it: startup says so in one line
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        async with gateway(tmp_path, route(dep("a", up))):
            pass


async def test_config_references_to_the_environment_and_files(up: FaultyUpstream, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_KEY_FOR_TEST", FROM_ENV)
    key_file = tmp_path / "upstream.key"
    key_file.write_text(f"{FROM_FILE}\n")
    by_env = route(dep("e", up, "echo-auth", {"api_key": "env:UPSTREAM_KEY_FOR_TEST"}), name="by-env")
    by_file = route(dep("f", up, "echo-auth", {"api_key": f"file:{key_file}"}), name="by-file")
    async with gateway(tmp_path / "d", by_env, by_file) as client:
        assert await answer(client, "by-env") == f"Bearer {FROM_ENV}"
        assert await answer(client, "by-file") == f"Bearer {FROM_FILE}"
        shown = (await client.get("/admin/routes/by-env")).json()["deployments"][0]["engine"]["api_key"]
        assert shown == "env:UPSTREAM_KEY_FOR_TEST"


@pytest.mark.parametrize(("api_key", "message"), [
    ("env:NO_SUCH_VARIABLE_4711", "deployment 'e': engine.api_key: environment variable NO_SUCH_VARIABLE_4711 "
                                  "is not set"),
    ("file:/nonexistent/strata/key", "deployment 'e': engine.api_key: cannot read /nonexistent/strata/key"),
])
async def test_a_missing_reference_stops_startup_naming_the_field(up: FaultyUpstream, tmp_path: Path,
                                                                  api_key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        async with gateway(tmp_path, route(dep("e", up, "echo-auth", {"api_key": api_key}))):
            pass


def test_a_bad_secret_key_stops_startup(tmp_path: Path) -> None:
    proc = StrataProcess(tmp_path, {"routes": [openai_route("m", "http://127.0.0.1:9/v1", "x")]},
                         env={"STRATA_SECRET_KEY": "not-a-key"})
    with pytest.raises(RuntimeError, match="STRATA_SECRET_KEY: key 1 is not a Fernet key"):
        proc.start(ready_timeout=60, require_ready=False)


def test_the_key_is_absent_from_every_log_line_of_a_full_run(up: FaultyUpstream, tmp_path: Path) -> None:
    """``strata up`` at debug level: a key given at run time, requests that succeed and fail with it, a
    restart that replays it; the captured log never holds it."""
    config = {"log_level": "debug", "routes": [openai_route("m", up.base_url, "whoami")]}
    proc = StrataProcess(tmp_path, config).start(require_ready=False)
    try:
        body = {"engine": {"type": "openai", "model": "echo-auth", "base_url": up.base_url, "api_key": SECRET}}
        r = proc.admin("PUT", "/admin/routes/keyed/deployments/keyed-dep", json=body)
        assert r.status_code == 200 and SECRET not in r.text, r.text
        client = proc.client()
        reply = client.chat.completions.create(model="keyed", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == f"Bearer {SECRET}"
        dead = {"engine": {"type": "openai", "model": "x", "base_url": "http://127.0.0.1:9/v1", "api_key": SECRET}}
        assert proc.admin("PUT", "/admin/routes/dead/deployments/dead-dep", json=dead).status_code == 200
        failed = httpx.post(proc.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {SECRET}"},
                            json={"model": "dead", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
        assert failed.status_code == 401 and SECRET not in failed.text  # the upstream key is not a Strata key
        views = "".join(proc.admin("GET", p).text for p in (*ADMIN_VIEWS, "/admin/routes/dead/changes"))
        assert SECRET not in views
    finally:
        proc.stop()
    proc.start(require_ready=False)  # the restart decrypts it
    try:
        reply = proc.client().chat.completions.create(model="keyed", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == f"Bearer {SECRET}"
    finally:
        proc.stop()
    log = proc.log_path.read_text(errors="replace")
    assert "route keyed: add_deployment" in log  # the log was captured at all
    assert SECRET not in log and SECRET[-12:] not in log
