"""``/v1/files`` through the real gateway with the official SDK: upload, list, retrieve, content, delete;
team isolation; the size limit; on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import psycopg
import pytest

from strata.files.tables import StoredFile
from tests.conftest import PG_URL, fault_routes, postgres_available
from tests.servers import ADMIN_KEY, StrataProcess, table_rows
from tests.upstreams import FaultyUpstream


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def strata(request: pytest.FixtureRequest, upstream: FaultyUpstream,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    config: dict = {"routes": fault_routes(upstream.base_url), "files": {"max_bytes": 4096}}
    if request.param == "postgres":
        if not postgres_available():
            pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute('DROP SCHEMA IF EXISTS "t_files_api" CASCADE')
            conn.execute('CREATE SCHEMA "t_files_api"')
        config["database"] = {"url": f"{PG_URL}?options=-csearch_path%3Dt_files_api"}
    proc = StrataProcess(tmp_path_factory.mktemp(f"files-{request.param}"), config)
    proc.start(ready_timeout=60)
    yield proc
    proc.stop()


def team_key(strata: StrataProcess, team: str) -> str:
    r = strata.admin("POST", "/admin/keys", json={"name": f"{team}-app", "team": team})
    assert r.status_code == 200, r.text
    return str(r.json()["key"])


def test_upload_list_retrieve_download_delete_with_the_sdk(strata: StrataProcess, tmp_path: Path) -> None:
    client = strata.client(team_key(strata, "docs"))
    path = tmp_path / "handbook.md"
    path.write_bytes(b"# Handbook\n\nVacation: 30 days.\n")
    uploaded = client.files.create(file=path.open("rb"), purpose="assistants")
    assert uploaded.id.startswith("file-") and uploaded.object == "file"
    assert (uploaded.filename, uploaded.bytes, uploaded.purpose) == ("handbook.md", path.stat().st_size, "assistants")
    batch = client.files.create(file=("input.jsonl", b'{"custom_id": "1"}\n'), purpose="batch")

    assert client.files.retrieve(uploaded.id).filename == "handbook.md"
    assert client.files.content(uploaded.id).content == path.read_bytes()
    assert [f.id for f in client.files.list()] == [batch.id, uploaded.id], "newest first"
    assert [f.id for f in client.files.list(purpose="batch")] == [batch.id]
    assert [f.id for f in client.files.list(order="asc")] == [uploaded.id, batch.id]
    first = client.files.list(limit=1)
    assert [f.id for f in first.data] == [batch.id] and first.has_more
    assert [f.id for f in first.get_next_page().data] == [uploaded.id], "the SDK pages with after="

    if strata.config and "database" not in strata.config:  # the metadata row keeps the content's sha256
        rows = table_rows(strata.data_dir, StoredFile.__table__)  # type: ignore[arg-type]
        assert {r["id"]: r["sha256"] for r in rows}[uploaded.id] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert (strata.data_dir / "files" / uploaded.id).read_bytes() == path.read_bytes()

    deleted = client.files.delete(uploaded.id)
    assert (deleted.id, deleted.deleted) == (uploaded.id, True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    assert [f.id for f in client.files.list()] == [batch.id]


def test_another_teams_file_does_not_exist_for_you(strata: StrataProcess) -> None:
    mine, theirs = strata.client(team_key(strata, "red")), strata.client(team_key(strata, "blue"))
    secret = mine.files.create(file=("plan.txt", b"red team plan"), purpose="user_data")
    for call in (lambda: theirs.files.retrieve(secret.id), lambda: theirs.files.content(secret.id),
                 lambda: theirs.files.delete(secret.id)):
        with pytest.raises(openai.NotFoundError) as err:
            call()
        assert err.value.body["code"] == "file_not_found"  # type: ignore[index]
    assert secret.id not in [f.id for f in theirs.files.list()]
    assert mine.files.retrieve(secret.id).id == secret.id, "still there for its own team"


def test_bad_uploads_are_refused_with_openai_errors(strata: StrataProcess) -> None:
    client = strata.client(team_key(strata, "limits"))
    with pytest.raises(openai.APIStatusError) as err:
        client.files.create(file=("big.bin", b"x" * 5000), purpose="assistants")
    assert err.value.status_code == 413 and err.value.body["param"] == "file"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        client.files.create(file=("a.txt", b"x"), purpose="nonsense")  # type: ignore[arg-type]
    assert bad.value.body["param"] == "purpose"  # type: ignore[index]
    r = httpx.post(strata.url + "/v1/files", json={"purpose": "batch"},
                   headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = httpx.get(strata.url + "/v1/files")
    assert r.status_code == 401
