"""A ``rag:`` route and the Responses ``file_search`` tool through the real gateway, with the bundled SmolLM2
and MiniLM: the answer is made from the passages the caller may read, and the chunks used are recorded in the
response header, the ledger row, the trace and the lineage graph (``strata lineage show``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import needs_models
from tests.servers import StrataProcess, cli, finished, ledger_rows, wait_for

pytestmark = needs_models

VACATION = b"# Vacation\n\nEvery employee gets 30 vacation days per year. Unused days carry over until March.\n"
SALARIES = b"# Salaries\n\nEngineers in band L4 earn between 90,000 and 120,000 euros. Reviews are in October.\n"
GLOBEX = b"# Vacation at Globex\n\nGlobex staff get 12 vacation days per year.\n"
QUESTION = "How many vacation days do employees get per year?"


@pytest.fixture(scope="module")
def strata(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    config = {"routes": [
        {"name": "smollm2", "deployments": [{"name": "smollm2-local", "engine": {"type": "llamacpp"}}],
         "rag": {"vector_stores": ["handbook"], "k": 2}},
        {"name": "minilm", "deployments": [{"name": "minilm-local", "engine": {"type": "sentence-transformers"}}]}]}
    proc = StrataProcess(tmp_path_factory.mktemp("rag-route"), config)
    proc.start(ready_timeout=300)
    yield proc
    proc.stop()


def key(strata: StrataProcess, team: str, role: str = "member") -> str:
    r = strata.admin("POST", "/admin/keys", json={"name": f"{team}-{role}", "team": team, "role": role})
    assert r.status_code == 200, r.text
    return str(r.json()["key"])


def handbook(client: openai.OpenAI, docs: dict[str, tuple[bytes, str | None]]) -> dict[str, str]:
    """A vector store named handbook with these documents (name -> content, acl); their file ids."""
    store = client.vector_stores.create(name="handbook")
    ids = {}
    for name, (content, acl) in docs.items():
        ids[name] = client.files.create(file=(f"{name}.md", content), purpose="assistants").id
        client.vector_stores.files.create_and_poll(file_id=ids[name], vector_store_id=store.id, poll_interval_ms=100,
                                                   attributes={"acl": acl} if acl else {})
    return {**ids, "store": store.id}


@pytest.fixture(scope="module")
def acme(strata: StrataProcess) -> dict[str, Any]:
    member = strata.client(key(strata, "acme"))
    ids = handbook(member, {"vacation": (VACATION, None), "salaries": (SALARIES, "group:hr")})
    return {**ids, "member": member, "backend": strata.client(key(strata, "acme", "operator"))}


def ask(client: openai.OpenAI, question: str, **kw: Any) -> tuple[Any, dict[str, str]]:
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=[{"role": "user", "content": question}], max_tokens=8, temperature=0, **kw)
    return raw.parse(), dict(raw.headers)


def served_row(strata: StrataProcess, request_id: str) -> dict[str, Any]:
    return wait_for(lambda: next((r for r in ledger_rows(strata.data_dir)
                                  if r["request_id"] == request_id and r["role"] != "embedding"), None),
                    10, f"the ledger row of {request_id}")


def test_the_answer_is_grounded_in_the_right_chunk_and_recorded(strata: StrataProcess, acme: dict[str, Any]) -> None:
    answer, headers = ask(acme["member"], QUESTION)
    assert answer.choices[0].message.content
    rid = headers["x-request-id"]
    cited = dict(item.split("=") for item in headers["x-strata-rag-chunks"].split(","))
    row = served_row(strata, rid)
    chunks = row["rag"]["chunks"]
    assert chunks[0]["document_id"] == acme["vacation"], "passage [1] is the vacation policy"
    assert {str(c["n"]): c["chunk_id"] for c in chunks} == cited
    assert acme["salaries"] not in {c["document_id"] for c in chunks}, "hr's document is not the member's"
    embeddings = [r for r in ledger_rows(strata.data_dir) if r["request_id"] == rid and r["role"] == "embedding"]
    assert embeddings and embeddings[0]["route"] == "minilm", "the query's embedding is an accounted call"

    trace = wait_for(lambda: (r := strata.admin("GET", f"/admin/traces/{rid}")).status_code == 200 and r.json(),
                     10, "the request's trace")
    spans = [s for root in trace["tree"] for s in _spans(root)]
    retrieve = next(s for s in spans if s["name"] == "strata.retrieve")
    assert retrieve["attributes"]["strata.rag.chunks"] == [c["chunk_id"] for c in chunks]

    shown = finished(cli(strata, "lineage", "show", rid, "--json"))
    assert shown.returncode == 0, shown.stderr
    up = json.loads(shown.stdout)["up"]
    edges = {(h["src_kind"], h["dst_kind"]) for h in up}
    assert {("chunk", "request"), ("document", "chunk"), ("file", "document")} <= edges
    assert ("file", acme["vacation"]) in {(h["src_kind"], h["src_id"]) for h in up}, "back to the uploaded file"
    tree = finished(cli(strata, "lineage", "show", rid))
    assert tree.returncode == 0 and acme["vacation"] in tree.stdout


def test_acl_holds_on_the_rag_route(strata: StrataProcess, acme: dict[str, Any]) -> None:
    question = "What do engineers in band L4 earn?"
    _, headers = ask(acme["member"], question)
    assert acme["salaries"] not in {c["document_id"] for c in served_row(strata, headers["x-request-id"])["rag"]
                                    ["chunks"]}
    _, headers = ask(acme["backend"], question, extra_headers={"X-Strata-User": "alice", "X-Strata-Groups": "hr"})
    chunks = served_row(strata, headers["x-request-id"])["rag"]["chunks"]
    assert chunks[0]["document_id"] == acme["salaries"], "alice of hr may read it"
    with pytest.raises(openai.PermissionDeniedError):
        ask(acme["member"], question, extra_headers={"X-Strata-Groups": "hr"})


def test_each_team_gets_its_own_handbook(strata: StrataProcess, acme: dict[str, Any]) -> None:
    globex = strata.client(key(strata, "globex"))
    ids = handbook(globex, {"vacation": (GLOBEX, None)})
    _, headers = ask(globex, QUESTION)
    docs = {c["document_id"] for c in served_row(strata, headers["x-request-id"])["rag"]["chunks"]}
    assert docs == {ids["vacation"]}, "globex's store only, never acme's"
    nobody = strata.client(key(strata, "initech"))
    with pytest.raises(openai.NotFoundError) as err:
        ask(nobody, QUESTION)
    assert err.value.body["code"] == "vector_store_not_found"  # type: ignore[index]


def test_file_search_on_the_responses_api(strata: StrataProcess, acme: dict[str, Any]) -> None:
    tool: Any = {"type": "file_search", "vector_store_ids": [acme["store"]], "max_num_results": 2}
    r = acme["member"].responses.create(model="smollm2", input=QUESTION, tools=[tool], max_output_tokens=8,
                                        include=["file_search_call.results"])
    search, message = r.output[0], r.output[1]
    assert search.type == "file_search_call" and search.status == "completed"
    assert search.queries == [QUESTION]
    assert search.results and search.results[0].file_id == acme["vacation"]
    assert "30 vacation days" in (search.results[0].text or "")
    assert acme["salaries"] not in {x.file_id for x in search.results}
    assert message.type == "message"
    for note in message.content[0].annotations:  # where the model cited a marker
        assert note.type == "file_citation" and note.file_id in (acme["vacation"],)
    plain = acme["member"].responses.create(model="smollm2", input="salary bands L4", tools=[tool],
                                            max_output_tokens=8)
    assert plain.output[0].results is None, "results only when included"


def _spans(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = [node]
    for child in node.get("children") or []:
        out += _spans(child)
    return out


def test_lineage_both_ways_from_a_dataset_version(strata: StrataProcess, acme: dict[str, Any]) -> None:
    records = [{"id": "parking", "name": "parking.md", "media_type": "text/markdown",
                "text": "# Parking\n\nStaff park in garage B; visitors use level 1."},
               {"id": "canteen", "name": "canteen.md", "media_type": "text/markdown",
                "text": "# Canteen\n\nThe canteen serves lunch from 11:30 to 14:00."}]
    r = strata.admin("POST", "/admin/datasets", json={"name": "facilities", "team": "acme", "records": records})
    assert r.status_code == 200, r.text
    member: openai.OpenAI = acme["member"]
    store = member.vector_stores.create(name="facilities")
    ingested = member.post(f"/vector_stores/{store.id}/datasets", body={"dataset": "facilities@1"}, cast_to=object)
    assert (ingested["added"], ingested["unchanged"]) == (2, 0)  # type: ignore[index]
    again = member.post(f"/vector_stores/{store.id}/datasets", body={"dataset": "facilities@1"}, cast_to=object)
    assert (again["added"], again["unchanged"], again["embedded_chunks"]) == (0, 2, 0)  # type: ignore[index]

    raw = member.responses.with_raw_response.create(
        model="smollm2", input="Where do staff park?", max_output_tokens=8,
        tools=[{"type": "file_search", "vector_store_ids": [store.id], "max_num_results": 1}])
    rid = raw.headers["x-request-id"]
    served_row(strata, rid)
    down = finished(cli(strata, "lineage", "show", "facilities@1", "--team", "acme", "--json"))
    assert down.returncode == 0, down.stderr
    hops = json.loads(down.stdout)["down"]
    assert ("request", rid) in {(h["dst_kind"], h["dst_id"]) for h in hops}, "version -> ... -> the request"
    assert {("dataset_version", "record"), ("record", "document"), ("document", "chunk"), ("chunk", "request")} \
        <= {(h["src_kind"], h["dst_kind"]) for h in hops}
    up = json.loads(finished(cli(strata, "lineage", "show", rid, "--json")).stdout)["up"]
    assert "dataset_version" in {h["src_kind"] for h in up}, "request -> chunk -> document -> record -> version"
    r = strata.admin("POST", "/admin/keys", json={"name": "globex-analyst", "team": "globex", "role": "analyst",
                                                  "scopes": {"teams": ["globex"]}})
    analyst = {"Authorization": f"Bearer {r.json()['key']}"}
    for ref in (rid, "facilities@1?team=acme"):
        assert httpx.get(f"{strata.url}/admin/lineage/{ref}", headers=analyst).status_code in (403, 404), ref
