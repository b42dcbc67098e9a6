"""The tamper-evident audit log: real changes make entries, ``strata audit verify`` names an edited, deleted or
reordered entry, concurrent writers keep one chain, an HMAC key stops a silent rewrite. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from strata.observe.audit import GENESIS, AuditLog
from strata.routing.rollout import SYSTEM_ACTOR
from strata.store.db import open_database
from tests.test_cli import strata

KEY = "k" * 32


def cli(url: str, *args: str, key: str | None = None) -> Any:
    env = {"STRATA_DATABASE__URL": url, **({"STRATA_AUDIT__HMAC_KEY": key} if key else {})}
    return strata(*args, env=env)


def verify_line(url: str, key: str | None = None) -> str:
    """``strata audit verify`` fails with exit 1 and one line on stderr naming the entry; returns the line."""
    p = cli(url, "audit", "verify", key=key)
    assert p.returncode == 1, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]


@pytest.fixture
def db(db_url: str) -> Engine:
    engine = open_database(db_url)
    yield engine
    engine.dispose()


def fill(db: Engine, n: int = 6, key: str | None = None) -> AuditLog:
    log = AuditLog(db, key)
    for i in range(1, n + 1):
        log.append("admin-env", "key.create", f"key{i}", {"name": f"svc-{i}", "team": "a", "n": 1.5 * i})
    return log


def test_chain_links_and_intact_log_verifies(db: Engine, db_url: str) -> None:
    log = fill(db)
    entries = log.entries()
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(entries, entries[1:], strict=False))
    p = cli(db_url, "audit", "verify")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("audit log intact: 6 entries") and entries[-1]["hash"] in p.stdout
    verdict = json.loads(cli(db_url, "audit", "verify", "--json").stdout)
    assert (verdict["ok"], verdict["entries"], verdict["head_seq"], verdict["problem"]) == (True, 6, 6, None)


def test_edited_entry_is_named(db: Engine, db_url: str) -> None:
    fill(db)
    with db.begin() as c:
        c.execute(text("UPDATE audit_log SET subject = 'someone-else' WHERE seq = 3"))
    line = verify_line(db_url)
    assert line.startswith("audit log broken at seq 3: edited:"), line
    assert "someone-else" in line


def test_deleted_entry_is_named(db: Engine, db_url: str) -> None:
    fill(db)
    with db.begin() as c:
        c.execute(text("DELETE FROM audit_log WHERE seq = 4"))
    line = verify_line(db_url)
    assert line.startswith("audit log broken at seq 4: deleted: entry 4 is missing"), line


def test_deleted_and_renumbered_entry_is_named(db: Engine, db_url: str) -> None:
    fill(db)
    with db.begin() as c:
        c.execute(text("DELETE FROM audit_log WHERE seq = 4"))
        for seq in (5, 6):
            c.execute(text("UPDATE audit_log SET seq = :new WHERE seq = :old"), {"new": seq - 1, "old": seq})
    line = verify_line(db_url)
    assert line.startswith("audit log broken at seq 4: reordered: this entry was written as entry 5"), line


def test_swapped_entries_are_named(db: Engine, db_url: str) -> None:
    fill(db)
    with db.begin() as c:  # swap seqs 2 and 5 (through -1: seq is unique)
        c.execute(text("UPDATE audit_log SET seq = -1 WHERE seq = 2"))
        c.execute(text("UPDATE audit_log SET seq = 2 WHERE seq = 5"))
        c.execute(text("UPDATE audit_log SET seq = 5 WHERE seq = -1"))
    line = verify_line(db_url)
    assert line.startswith("audit log broken at seq 2: reordered: this entry was written as entry 5"), line
    assert "key5" in line


def test_concurrent_writers_keep_one_chain(db_url: str) -> None:
    """Four writers, each with its own engine (its own connections, like replicas), append at once."""
    engines = [open_database(db_url) for _ in range(4)]
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            log = AuditLog(engines[i])
            for j in range(15):
                log.append(f"replica-{i}", "limit.set", f"limit:key:{i}:{j}", {"j": j})
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    verdict = AuditLog(engines[0]).verify()
    assert (verdict.ok, verdict.entries) == (True, 60), verdict
    subjects = {e["subject"] for e in AuditLog(engines[0]).entries()}
    assert len(subjects) == 60
    for e in engines:
        e.dispose()


def test_export_is_jsonl_that_verifies_offline(db: Engine, db_url: str, tmp_path: Path) -> None:
    fill(db)
    p = cli(db_url, "audit", "export")
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    assert [e["seq"] for e in lines] == [1, 2, 3, 4, 5, 6] and lines[0]["detail"]["n"] == 1.5
    path = tmp_path / "audit.jsonl"
    path.write_text(p.stdout)
    assert cli(db_url, "audit", "verify", "--file", str(path)).returncode == 0
    lines[2]["actor"] = "nobody"
    path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    p = cli(db_url, "audit", "verify", "--file", str(path))
    assert p.returncode == 1 and p.stderr.startswith("audit log broken at seq 3: edited:"), p.stderr
    recent = cli(db_url, "audit", "export", "--since", "1h")
    assert len(recent.stdout.splitlines()) == 6


def test_hmac_key_stops_a_silent_rewrite(db: Engine, db_url: str) -> None:
    """Whoever rewrites the chain without the key (recomputing plain hashes) is caught; without the key the
    CLI refuses to change keys rather than write an unsealed entry."""
    fill(db, 3)
    keyed = AuditLog(db, KEY)
    keyed.start_signing()
    keyed.append("admin-env", "key.revoke", "key1", {})
    assert keyed.verify().ok and keyed.verify().keyed_from == 4
    assert cli(db_url, "audit", "verify", key=KEY).returncode == 0
    assert "edited" in verify_line(db_url), "a keyed entry does not verify without the key"
    p = cli(db_url, "keys", "create", "svc", key=None)
    assert p.returncode == 2 and "STRATA_AUDIT__HMAC_KEY" in p.stderr, p.stderr
    assert len(keyed.entries()) == 5, "nothing was written"
    # the attacker deletes the keyed tail and appends plain entries of their own: the tail is not sealed
    with db.begin() as c:
        c.execute(text("DELETE FROM audit_log WHERE seq >= 4"))
    AuditLog(db).append("mallory", "key.create", "backdoor", {})
    line = verify_line(db_url, key=KEY)
    assert line.startswith("audit log broken at seq 4: unsigned: no entry is sealed"), line


async def test_admin_changes_are_audited(app_client: httpx.AsyncClient) -> None:
    c = app_client
    created = (await c.post("/admin/keys", json={"name": "svc", "team": "a"})).json()
    assert (await c.delete(f"/admin/keys/{created['id']}")).status_code == 200
    assert (await c.put("/admin/limits", json={"scope": "team", "subject": "a", "rpm": 10})).status_code == 200
    assert (await c.put("/admin/budgets", json={"scope": "team", "subject": "a", "cap_usd": 5})).status_code == 200
    assert (await c.delete("/admin/limits", params={"scope": "team", "subject": "a"})).status_code == 200
    assert (await c.patch("/admin/routes/ok", json={"retries": 0})).status_code == 200
    assert (await c.post("/admin/routes/ok/canary", json={"traffic": 10, "model": "m2"})).status_code == 200
    assert (await c.post("/admin/routes/ok/rollback", json={"reason": "bad"})).status_code == 200
    assert (await c.post("/admin/routes/ok/canary", json={"traffic": 10, "model": "m3"})).status_code == 200
    state = c.app.state.strata  # type: ignore[attr-defined]
    await state.routing.rollouts.rollback("ok", SYSTEM_ACTOR, "canary worse than primary")  # the controller's own path

    r = await c.get("/admin/audit", params={"limit": 100})
    assert r.status_code == 200
    entries = r.json()["data"]
    got = [(e["actor"], e["action"], e["subject"]) for e in reversed(entries)]
    assert got == [
        ("admin-env", "key.create", created["id"]), ("admin-env", "key.revoke", created["id"]),
        ("admin-env", "limit.set", "limit:team:a"), ("admin-env", "budget.set", "budget:team:a:month"),
        ("admin-env", "limit.remove", "limit:team:a"), ("admin-env", "route.update_route", "ok"),
        ("admin-env", "route.start_canary", "ok"), ("admin-env", "route.canary_rollback", "ok"),
        ("admin-env", "route.start_canary", "ok"), (SYSTEM_ACTOR, "route.canary_rollback", "ok"),
    ]
    assert entries[0]["detail"]["reason"] == "canary worse than primary"
    assert (entries[-3]["detail"]["before"], entries[-3]["detail"]["after"]["rpm"]) == (None, 10)
    assert "key" not in entries[-1]["detail"], "a key's secret is never in the log"
    only = (await c.get("/admin/audit", params={"action": "key.revoke"})).json()["data"]
    assert [e["subject"] for e in only] == [created["id"]]
    assert (await c.get("/admin/audit", params={"limit": 0})).status_code == 400
    verdict = (await c.get("/admin/audit/verify")).json()
    assert (verdict["ok"], verdict["entries"], verdict["problem"]) == (True, 10, None)


def test_cli_key_changes_are_audited(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'strata.db'}"
    open_database(url).dispose()
    p = cli(url, "keys", "create", "svc", "--team", "t", "--json")
    assert p.returncode == 0, p.stderr
    made = json.loads(p.stdout)
    assert cli(url, "keys", "revoke", made["id"]).returncode == 0
    entries = AuditLog(open_database(url)).entries()
    assert [(e["action"], e["subject"]) for e in entries] == [("key.create", made["id"]), ("key.revoke", made["id"])]
    assert all(e["actor"].startswith("cli") for e in entries)
    assert entries[0]["detail"]["team"] == "t" and made["key"] not in json.dumps(entries)
    assert cli(url, "audit", "verify").returncode == 0
