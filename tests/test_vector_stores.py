"""``/v1/vector_stores`` through the real gateway with the official SDK and the bundled MiniLM: upload ->
vector store -> search; file batches; attribute filters; ACL (a reader without access never gets the chunk);
team isolation; the ingestion's embeddings are accounted to the team."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import needs_models
from tests.servers import StrataProcess, ledger_rows, wait_for

pytestmark = needs_models

HANDBOOK = b"""# Employee handbook

## Vacation
Every employee gets 30 vacation days per year. Unused vacation days carry over until March.

## Travel
Book trains for trips under 500 km. Flights need a manager's approval.
"""
SALARIES = b"""# Salary bands 2026

Engineers in band L4 earn between 90,000 and 120,000 euros. The salary review happens every October.
"""
SECURITY = b"""# Security policy

Laptops must use full-disk encryption. Report a lost badge to the front desk within one hour.
"""


@pytest.fixture(scope="module")
def strata(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    config = {"routes": [{"name": "minilm", "deployments": [
        {"name": "minilm-local", "engine": {"type": "sentence-transformers"}}]}]}
    proc = StrataProcess(tmp_path_factory.mktemp("vector-stores"), config)
    proc.start(ready_timeout=300)
    yield proc
    proc.stop()


def key(strata: StrataProcess, team: str, role: str = "member") -> str:
    r = strata.admin("POST", "/admin/keys", json={"name": f"{team}-{role}", "team": team, "role": role})
    assert r.status_code == 200, r.text
    return str(r.json()["key"])


@pytest.fixture(scope="module")
def acme(strata: StrataProcess) -> dict[str, Any]:
    """Team acme's store: the handbook and the security policy for the whole team, salaries for group hr."""
    member = strata.client(key(strata, "acme"))
    files = {name: member.files.create(file=(f"{name}.md", content), purpose="assistants").id
             for name, content in (("handbook", HANDBOOK), ("salaries", SALARIES), ("security", SECURITY))}
    store = member.vector_stores.create(name="policies")
    for name, file_id in files.items():
        attributes: dict[str, Any] = {"dept": "hr" if name == "salaries" else "ops"}
        if name == "salaries":
            attributes["acl"] = "group:hr"
        member.vector_stores.files.create_and_poll(file_id=file_id, vector_store_id=store.id, attributes=attributes,
                                                   poll_interval_ms=100)
    return {"store": store.id, "files": files, "member": member}


def test_upload_store_search_with_the_sdk(strata: StrataProcess, acme: dict[str, Any]) -> None:
    client: openai.OpenAI = acme["member"]
    store = client.vector_stores.retrieve(acme["store"])
    assert store.object == "vector_store" and store.id.startswith("vs_") and store.name == "policies"
    assert store.status == "completed" and store.file_counts.completed == 3 and store.file_counts.total == 3
    assert store.usage_bytes == len(HANDBOOK) + len(SALARIES) + len(SECURITY)
    vs_file = client.vector_stores.files.retrieve(acme["files"]["handbook"], vector_store_id=acme["store"])
    assert (vs_file.status, vs_file.attributes) == ("completed", {"dept": "ops"})
    assert {f.id for f in client.vector_stores.files.list(vector_store_id=acme["store"])} == \
        {acme["files"]["handbook"], acme["files"]["security"], acme["files"]["salaries"]}

    results = client.vector_stores.search(acme["store"], query="How many vacation days do I get?",
                                          max_num_results=2)
    top = results.data[0]
    assert (top.file_id, top.filename) == (acme["files"]["handbook"], "handbook.md")
    assert "30 vacation days" in top.content[0].text and top.content[0].type == "text"
    assert top.attributes == {"dept": "ops"} and 0 < top.score
    content = client.vector_stores.files.content(acme["files"]["security"], vector_store_id=acme["store"])
    assert "full-disk encryption" in "".join(p.text or "" for p in content)


def test_a_reader_without_access_never_gets_the_chunk(strata: StrataProcess, acme: dict[str, Any]) -> None:
    query = "salary bands and salary review for engineers"
    member: openai.OpenAI = acme["member"]
    for mode in ("hybrid", "dense", "lexical"):
        hits = member.vector_stores.search(acme["store"], query=query, max_num_results=10,
                                           extra_body={"mode": mode}).data
        assert acme["files"]["salaries"] not in {h.file_id for h in hits}, mode
        assert hits, "the team's readable documents still come back"
    backend = strata.client(key(strata, "acme", "operator"))
    hr = backend.vector_stores.search(acme["store"], query=query, extra_headers={"X-Strata-User": "alice",
                                                                               "X-Strata-Groups": "hr,eng"})
    assert hr.data[0].file_id == acme["files"]["salaries"], "a trusted backend asserts alice of group hr"
    alone = backend.vector_stores.search(acme["store"], query=query, extra_headers={"X-Strata-User": "bob"})
    assert acme["files"]["salaries"] not in {h.file_id for h in alone.data}
    with pytest.raises(openai.PermissionDeniedError) as err:
        member.vector_stores.search(acme["store"], query=query, extra_headers={"X-Strata-Groups": "hr"})
    assert err.value.body["code"] == "identity_not_trusted"  # type: ignore[index]


def test_attribute_filters_and_removing_a_file(strata: StrataProcess, acme: dict[str, Any]) -> None:
    client = strata.client(key(strata, "acme"))
    files = {name: client.files.create(file=(f"{name}.md", content), purpose="assistants").id
             for name, content in (("handbook", HANDBOOK), ("security", SECURITY))}
    store = client.vector_stores.create(name="scratch")
    batch = client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, files=[{"file_id": files["handbook"], "attributes": {"dept": "ops"}},
                                         {"file_id": files["security"], "attributes": {"dept": "it"}}],
        poll_interval_ms=100)
    assert batch.object == "vector_store.files_batch" and batch.status == "completed"
    assert (batch.file_counts.completed, batch.file_counts.total) == (2, 2)
    listed = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id)
    assert {f.id for f in listed} == set(files.values())

    hits = client.vector_stores.search(store.id, query="laptops encryption vacation",
                                       filters={"type": "eq", "key": "dept", "value": "ops"}).data
    assert hits and {h.file_id for h in hits} == {files["handbook"]}
    client.vector_stores.files.delete(files["security"], vector_store_id=store.id)
    hits = client.vector_stores.search(store.id, query="full-disk encryption of laptops").data
    assert files["security"] not in {h.file_id for h in hits}, "a removed file is gone from every index"
    assert client.vector_stores.retrieve(store.id).file_counts.total == 1
    assert client.vector_stores.update(store.id, name="renamed", metadata={"k": "v"}).name == "renamed"
    assert client.vector_stores.delete(store.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)


def test_another_team_sees_nothing(strata: StrataProcess, acme: dict[str, Any]) -> None:
    other = strata.client(key(strata, "globex", "operator"))
    assert acme["store"] not in {s.id for s in other.vector_stores.list()}
    for call in (lambda: other.vector_stores.retrieve(acme["store"]),
                 lambda: other.vector_stores.search(acme["store"], query="vacation"),
                 lambda: other.vector_stores.files.list(vector_store_id=acme["store"]),
                 lambda: other.vector_stores.files.create(vector_store_id=acme["store"],
                                                          file_id=acme["files"]["handbook"])):
        with pytest.raises(openai.NotFoundError):
            call()
    mine = other.vector_stores.create(name="policies")
    with pytest.raises(openai.NotFoundError) as err:  # acme's file cannot be put into globex's store
        other.vector_stores.files.create(vector_store_id=mine.id, file_id=acme["files"]["handbook"])
    assert err.value.body["code"] == "file_not_found"  # type: ignore[index]


def test_ingestion_embeddings_are_accounted_to_the_team(strata: StrataProcess, acme: dict[str, Any]) -> None:
    file_id = acme["files"]["handbook"]
    rows = wait_for(lambda: [r for r in ledger_rows(strata.data_dir) if r["request_id"] == f"ingest-{file_id}"],
                    10, "the ingestion's ledger rows")
    assert {(r["team"], r["role"], r["route"], r["status"]) for r in rows} == {("acme", "embedding", "minilm", 200)}
    assert sum(r["prompt_tokens"] for r in rows) > 0
