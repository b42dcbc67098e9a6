"""The model registry end to end: versions with content hashes and lineage, aliases that routes follow
(``model: registry:bot@champion``), alias moves that rebuild engines or roll out as a canary, approvals, RBAC,
and the bundled models registered on the first start. Versions are served by a real fake upstream: ``echo``
repeats the question (a right answer), ``ok`` answers a fixed sentence (a wrong one)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from strata.data.tables import LineageEdge
from strata.registry.hashing import content_hash
from strata.registry.store import NewVersion, RegistryStore
from strata.store.db import open_database
from tests.servers import StrataProcess, cli, finished, openai_route, table_rows
from tests.upstreams import REPLY, FaultyUpstream

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def up() -> Iterator[FaultyUpstream]:
    with FaultyUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def strata(up: FaultyUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    proc = StrataProcess(tmp_path_factory.mktemp("registry"), {"routes": [openai_route("plain", up.base_url, "ok")]})
    proc.start(ready_timeout=60)
    yield proc
    proc.stop()


def register(proc: StrataProcess, up: FaultyUpstream, model: str, answer: str, **more: Any) -> dict[str, Any]:
    body = {"model": model, "artifact": answer, "engine_type": "openai", "parameters": {"base_url": up.base_url},
            **more}
    r = proc.admin("POST", "/admin/registry/models", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def move(proc: StrataProcess, model: str, alias: str, version: int) -> Any:
    return proc.admin("PUT", f"/admin/registry/models/{model}/aliases/{alias}", json={"version": version})


def ask(proc: StrataProcess, route: str) -> str:
    r = proc.client().chat.completions.create(model=route, messages=[{"role": "user", "content": QUESTION}])
    return r.choices[0].message.content or ""


def audit(proc: StrataProcess, action: str) -> list[dict[str, Any]]:
    r = proc.admin("GET", "/admin/audit", params={"action": action})
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def follow_route(proc: StrataProcess, up: FaultyUpstream, route: str, model: str) -> None:
    dep = {"engine": {"type": "openai", "base_url": up.base_url, "model": f"registry:{model}@champion"}}
    r = proc.admin("PUT", f"/admin/routes/{route}/deployments/{route}-main", json=dep)
    assert r.status_code == 200, r.text


def test_bundled_models_are_registered_once_with_a_content_hash(strata: StrataProcess) -> None:
    p = finished(cli(strata, "models", "list", "--json"))
    assert p.returncode == 0, p.stderr
    models = {m["name"]: m for m in json.loads(p.stdout)}
    assert models["smollm2"]["aliases"] == {"champion": 1} and models["smollm2"]["latest_version"] == 1
    show = strata.admin("GET", "/admin/registry/models/smollm2").json()
    (v1,) = show["versions"]
    assert v1["content_hash"].startswith("sha256:") and v1["artifact_uri"] == "bundled:smollm2"
    assert v1["engine_type"] == "llamacpp" and v1["aliases"] == ["champion"]


def test_alias_in_a_route_resolves_and_an_alias_move_rebuilds_it(strata: StrataProcess, up: FaultyUpstream) -> None:
    v1 = register(strata, up, "bot", "echo", run_id="train-17", dataset_versions=["support-qa@3"],
                  metrics={"accuracy": 0.9}, tags={"owner": "support"})
    assert (v1["version"], v1["run_id"], v1["dataset_versions"]) == (1, "train-17", ["support-qa@3"])
    assert v1["content_hash"] is None, "an upstream's model name has nothing local to hash"
    edges = {(e["src_kind"], e["src_id"], e["dst_id"]) for e in table_rows(strata.data_dir, LineageEdge.__table__)}  # type: ignore[arg-type]
    assert {("dataset_version", "support-qa@3", "bot@1"), ("training_run", "train-17", "bot@1")} <= edges
    assert register(strata, up, "bot", "ok")["version"] == 2
    assert move(strata, "bot", "champion", 1).status_code == 200
    follow_route(strata, up, "bot", "bot")
    assert QUESTION in ask(strata, "bot"), "registry:bot@champion serves version 1 (echo)"
    r = move(strata, "bot", "champion", 2)
    assert r.status_code == 200, r.text
    assert r.json()["rebuilt"] == ["bot"] and r.json()["rollouts"] == []
    assert ask(strata, "bot") == REPLY, "the route follows the alias to version 2 at once (no canary plan)"
    route = strata.admin("GET", "/admin/routes/bot").json()
    assert route["deployments"][0]["engine"]["model"] == "registry:bot@champion", "the route keeps the reference"
    (entry, *_) = audit(strata, "registry.alias")
    assert entry["subject"] == "bot@champion" and entry["detail"]["from"] == 1 and entry["detail"]["to"] == 2


def test_alias_move_on_a_route_with_canary_steps_rolls_out_as_a_canary(strata: StrataProcess,
                                                                       up: FaultyUpstream) -> None:
    for answer in ("ok", "echo", "ok"):
        register(strata, up, "rollbot", answer)
    move(strata, "rollbot", "champion", 1)
    follow_route(strata, up, "rollbot", "rollbot")
    r = strata.admin("PATCH", "/admin/routes/rollbot", json={"canary": {"steps": [50, 100]}})
    assert r.status_code == 200, r.text
    r = move(strata, "rollbot", "champion", 2)
    assert r.status_code == 200, r.text
    assert r.json()["rollouts"] == ["rollbot"] and r.json()["alias"] == {**r.json()["alias"], "version": 1,
                                                                         "pending": 2}
    canary = strata.admin("GET", "/admin/routes/rollbot").json()["deployments"][1]
    assert (canary["role"], canary["traffic"], canary["engine"]["model"]) == ("canary", 50, "registry:rollbot@2")
    answers = {ask(strata, "rollbot") for _ in range(40)}
    assert answers == {REPLY, json.dumps([{"role": "user", "content": QUESTION}])}, "both versions serve"
    assert move(strata, "rollbot", "champion", 3).status_code == 400, "one rollout of an alias at a time"
    r = strata.admin("POST", "/admin/routes/rollbot/promote")
    assert r.status_code == 200, r.text
    alias = strata.admin("GET", "/admin/registry/models/rollbot").json()["aliases"][0]
    assert (alias["version"], alias["pending"]) == (2, None), "the alias moves when the canary is promoted"
    (dep,) = strata.admin("GET", "/admin/routes/rollbot").json()["deployments"]
    assert dep["engine"]["model"] == "registry:rollbot@champion", "the promoted deployment follows the alias again"
    assert QUESTION in ask(strata, "rollbot")
    # a rolled-back canary leaves the alias where it was
    assert move(strata, "rollbot", "champion", 3).json()["rollouts"] == ["rollbot"]
    assert strata.admin("POST", "/admin/routes/rollbot/rollback").status_code == 200
    alias = strata.admin("GET", "/admin/registry/models/rollbot").json()["aliases"][0]
    assert (alias["version"], alias["pending"]) == (2, None)
    assert [e["detail"]["to"] for e in audit(strata, "registry.alias_rollback")] == [3]


def test_approval_records_who_and_when_and_rbac_guards_writes(strata: StrataProcess, up: FaultyUpstream) -> None:
    register(strata, up, "appr", "echo")
    p = finished(cli(strata, "models", "approve", "appr", "1", "--note", "eval 0.93", "--json"))
    assert p.returncode == 0, p.stderr
    approval = json.loads(p.stdout)["approval"]
    assert approval["status"] == "approved" and approval["by"] and approval["at"] and approval["note"] == "eval 0.93"
    r = strata.admin("POST", "/admin/keys", json={"name": "viewer", "team": "ml", "role": "analyst"})
    analyst = {"Authorization": f"Bearer {r.json()['key']}"}

    assert httpx.get(strata.url + "/admin/registry/models/appr", headers=analyst).status_code == 200
    r = httpx.put(strata.url + "/admin/registry/models/appr/aliases/champion", headers=analyst, json={"version": 1})
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
    r = strata.admin("POST", "/admin/keys", json={"name": "ops", "team": "ml", "role": "operator"})
    operator = {"Authorization": f"Bearer {r.json()['key']}"}
    r = httpx.post(strata.url + "/admin/registry/models/appr/versions/1/approve", headers=operator, json={})
    assert r.status_code == 403, "approving is an admin's"
    p = finished(cli(strata, "models", "show", "appr"))
    assert p.returncode == 0 and "approved by" in p.stdout


def test_unknown_alias_or_model_is_one_clear_error(strata: StrataProcess, up: FaultyUpstream) -> None:
    r = strata.admin("GET", "/admin/registry/models/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_registered"
    dep = {"engine": {"type": "openai", "base_url": up.base_url, "model": "registry:nope@champion"}}
    r = strata.admin("PUT", "/admin/routes/nope/deployments/nope-main", json=dep)
    assert r.status_code == 400 and "no registered model" in r.json()["error"]["message"]
    register(strata, up, "lone", "echo")
    p = finished(cli(strata, "models", "alias", "lone", "champion", "99"))
    assert p.returncode == 1 and "no version 99" in p.stderr


def test_a_restart_resolves_routes_on_the_registry_again(up: FaultyUpstream, tmp_path: Path) -> None:
    proc = StrataProcess(tmp_path, {"routes": [openai_route("plain", up.base_url, "ok")]})
    proc.start(ready_timeout=60)
    try:
        register(proc, up, "keep", "echo")
        move(proc, "keep", "champion", 1)
        follow_route(proc, up, "keep", "keep")
    finally:
        proc.stop()
    proc.start(ready_timeout=60)
    try:
        assert QUESTION in ask(proc, "keep")
        show = proc.admin("GET", "/admin/registry/models/smollm2").json()
        assert len(show["versions"]) == 1, "the bundled models are registered once"
    finally:
        proc.stop()


def test_store_on_sqlite_and_postgres(db_url: str, tmp_path: Path) -> None:
    db = open_database(db_url)
    store = RegistryStore(db)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(1000))
    v = store.register(NewVersion("m", str(gguf), "llamacpp"), "me")
    assert v["content_hash"] == content_hash(gguf) and v["version"] == 1
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "w.bin").write_bytes(b"x")
    other = tmp_path / "other"
    other.mkdir()
    (other / "w.bin").write_bytes(b"x")
    assert content_hash(copy) == content_hash(other), "a directory hashes by its manifest, not its location"
    assert store.register(NewVersion("m", str(copy), "sentence-transformers"), "me")["version"] == 2
    store.set_alias("m", "champion", 1, "me")
    store.set_alias("m", "champion", 2, "me", pending=True)
    assert store.version("m", "champion")["version"] == 1 and (store.alias("m", "champion") or {})["pending"] == 2
    with pytest.raises(Exception, match="not approved"):
        store.set_alias("m", "challenger", 2, "me", require_approval=True)
    store.approve("m", 2, "boss")
    assert store.set_alias("m", "challenger", 2, "me", require_approval=True)["version"] == 2
    db.dispose()
