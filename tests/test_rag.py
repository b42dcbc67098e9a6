"""RAG core (issue 10, RG): parsing and chunking of each format, hybrid search with the bundled MiniLM, access
control at retrieval (randomised documents and principals, on the embedded backend and on a real Chroma server),
deletion from every index, index files rebuilt from the database, incremental re-ingest of dataset versions.

The service runs in process against a real database (SQLite, and PostgreSQL where the store matters); the
HTTP surface over it (vector stores, ``rag:`` routes) is tested in the API engineer's files.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from strata.errors import NotFound, PermissionDenied
from strata.rag.acl import Principal
from strata.rag.chunk import chunk, count_tokens
from strata.rag.config import ChromaSettings, ChunkingConfig, RagSettings
from strata.rag.index.base import IndexedChunk
from strata.rag.parse import parse_document
from strata.rag.service import RagService
from strata.store.db import open_database

from .conftest import HAVE_LOCAL_MODELS

ROOT = Path(__file__).resolve().parents[1]
CHROMA = ROOT / ".venv-chroma" / "bin" / "chroma"


# ---------------------------------------------------------------- parsing and chunking


def make_pdf(pages: list[str]) -> bytes:
    """A minimal real PDF (Helvetica text, one line per page), written byte by byte with its xref table."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]
    kids = []
    for text in pages:
        stream = zlib.compress(f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode())
        objs.append(f"<< /Length {len(stream)} /Filter /FlateDecode >>\nstream\n".encode() + stream +
                    b"\nendstream")
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {len(objs)} 0 R "
                    f"/Resources << /Font << /F1 {{F}} 0 R >> >> >>".encode())
        kids.append(len(objs))
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    font = len(objs)
    objs = [o.replace(b"{F}", str(font).encode()) for o in objs]
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>".encode()
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def test_parse_pdf_pages_become_sections() -> None:
    doc = parse_document("report.pdf", make_pdf(["Quarterly revenue grew nine percent.", "Churn fell to two."]))
    assert doc.media_type == "application/pdf"
    assert [s.heading for s in doc.sections] == ["Page 1", "Page 2"]
    assert "Quarterly revenue grew nine percent." in doc.sections[0].text
    assert "Churn fell to two." in doc.sections[1].text
    assert all(doc.text[s.start:s.end] == s.text for s in doc.sections)


def test_parse_html_keeps_headings_drops_scripts() -> None:
    html = (b"<html><head><title>Handbook</title><style>p{}</style></head><body><nav>Home | About</nav>"
            b"<h1>Leave</h1><p>Staff get <b>25 days</b> of leave.</p><script>track()</script>"
            b"<h2>Sick days</h2><ul><li>Tell your manager.</li><li><p>Rest.</p></li></ul></body></html>")
    doc = parse_document("handbook.html", html)
    assert doc.title == "Handbook"
    assert [s.heading for s in doc.sections] == ["Leave", "Sick days"]
    assert doc.sections[0].text == "Staff get 25 days of leave."
    assert "track()" not in doc.text and "Home | About" not in doc.text and "p{}" not in doc.text
    assert "Tell your manager." in doc.sections[1].text and "Rest." in doc.sections[1].text


def test_parse_markdown_and_text() -> None:
    md = b"# Guide\n\nIntro with `code` and **bold**.\n\n## Install\n\n- pip install x\n\n```\nmake up\n```\n"
    doc = parse_document("guide.md", md)
    assert doc.title == "Guide"
    assert [s.heading for s in doc.sections] == ["Guide", "Install"]
    assert doc.sections[0].text == "Intro with code and bold."
    assert "make up" in doc.sections[1].text
    txt = parse_document("notes.txt", b"first line\nsame paragraph\n\n\nsecond paragraph")
    assert txt.media_type == "text/plain" and txt.title == "notes"
    assert txt.text == "first line same paragraph\n\nsecond paragraph"


def test_chunks_respect_budget_sections_and_overlap() -> None:
    paras = "\n\n".join(" ".join(f"Fact {p}.{s} is about topic {p} and nothing else." for s in range(8))
                        for p in range(6))
    doc = parse_document("long.md", f"# One\n\n{paras}\n\n# Two\n\nA short closing section.".encode())
    cfg = ChunkingConfig(max_tokens=60, overlap_tokens=15)
    chunks = chunk(doc, cfg)
    assert all(count_tokens(c.text) <= 60 for c in chunks)
    assert all(doc.text[c.start:c.end] == c.text for c in chunks)
    assert chunks[-1].heading == "Two" and chunks[-1].text == "A short closing section."
    assert all("closing" not in c.text for c in chunks[:-1])  # never across a heading
    one = [c for c in chunks if c.heading == "One"]
    assert all(a.end > b.start for a, b in zip(one, one[1:], strict=False))  # consecutive chunks overlap
    assert all(c.text[0].isupper() and c.text.endswith(".") for c in one)  # sentence boundaries
    covered = set().union(*(range(c.start, c.end) for c in one))
    assert covered >= set(range(one[0].start, one[-1].end)) - {i for i, ch in enumerate(doc.text) if ch.isspace()}


# ---------------------------------------------------------------- ACL, property test on both backends


class ListSource:
    def __init__(self, chunks: list[IndexedChunk]) -> None:
        self.items = chunks

    def acl_rows(self) -> Iterator[tuple[int, str, list[str]]]:
        return ((c.key, c.document_id, list(c.acl)) for c in self.items)

    def chunks(self) -> Iterator[IndexedChunk]:
        return iter(self.items)


def random_corpus(seed: int, n: int = 2000, dim: int = 32) -> tuple[list[IndexedChunk], dict[str, float]]:
    """Chunks whose ACLs mix exact-selectivity groups (s1: 1%, s10: 10%, s50: 50% of the chunks) with random
    team/user/key/group tokens; every chunk's text has the word "common" so every readable chunk matches BM25."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    acls: list[set[str]] = [set() for _ in range(n)]
    shares = {"s1": 0.01, "s10": 0.10, "s50": 0.50}
    for group, share in shares.items():
        for i in rng.choice(n, int(n * share), replace=False):
            acls[i].add(f"group:{group}")
    for acl in acls:
        for _ in range(rng.integers(0, 3)):
            kind = rng.choice(["team", "user", "key", "group"])
            acl.add(f"{kind}:{kind[0]}{rng.integers(0, 40)}")
        if not acl:
            acl.add("team:owner")
    words = ["alpha", "beta", "gamma", "delta", "omega"]
    chunks = [IndexedChunk(i + 1, f"doc{i // 2}", f"common {words[i % 5]} {rng.integers(0, 1000)}", sorted(acls[i]),
                           vectors[i]) for i in range(n)]
    return chunks, shares


def random_principal(rng: np.random.Generator, group: str) -> Principal:
    """A caller in a selectivity group, sometimes with a stray user or group token of its own."""
    user = f"u{rng.integers(0, 400)}" if rng.random() < 0.5 else None  # mostly matches nothing
    extra = {f"g{rng.integers(100, 140)}"} if rng.random() < 0.3 else set()
    return Principal(team=f"t{rng.integers(100, 140)}", key_id=f"k{rng.integers(100, 140)}", user=user,
                     groups=frozenset({group, *extra}))


def check_acl_property(backend: Any, chunks: list[IndexedChunk], seed: int, k: int = 10) -> dict[str, float]:
    rng = np.random.default_rng(seed + 1)
    by_key = {c.key: c for c in chunks}
    returned: dict[str, list[float]] = {}
    for group in ("s1", "s10", "s50"):
        for _ in range(8):
            who = random_principal(rng, group)
            tokens = who.tokens()
            readable = [c for c in chunks if not tokens.isdisjoint(c.acl)]
            assert len(readable) >= k
            q = np.asarray(rng.standard_normal(chunks[0].vector.shape[0]), dtype=np.float32)
            for hits in (backend.search_dense(q, k, tokens), backend.search_lexical("common", k, tokens)):
                leaked = [h.key for h in hits if tokens.isdisjoint(by_key[h.key].acl)]
                assert not leaked, f"{who} got chunks it may not read: {leaked}"
                assert len(hits) == k, f"{group}: {len(hits)} of {k} results with {len(readable)} readable"
                assert len({h.key for h in hits}) == k
                returned.setdefault(group, []).append(len(hits) / k)
            # dense ranking is the true top k of what the caller may read (recall against exact search)
            exact = sorted(readable, key=lambda c: -float(c.vector @ q / np.linalg.norm(c.vector)))[:k]
            got = {h.key for h in backend.search_dense(q, k, tokens)}
            assert len(got & {c.key for c in exact}) >= k - 1
    return {g: float(np.mean(v)) for g, v in returned.items()}


def test_acl_property_embedded(tmp_path: Path) -> None:
    from strata.rag.index.embedded import EmbeddedBackend

    chunks, _ = random_corpus(seed=11)
    backend = EmbeddedBackend(tmp_path / "c", ListSource([]))
    backend.upsert(chunks)
    backend.flush()
    assert check_acl_property(backend, chunks, seed=11) == {"s1": 1.0, "s10": 1.0, "s50": 1.0}
    # nobody's tokens: nothing at all
    assert backend.search_dense(chunks[0].vector, 10, frozenset({"user:nobody"})) == []
    assert backend.search_lexical("common", 10, frozenset({"user:nobody"})) == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Chroma server from ``make test``'s own venv (.venv-chroma), on a free port."""
    if not CHROMA.exists():
        pytest.skip(f"Chroma server not installed ({CHROMA} missing; `make test` installs it, see "
                    ".venv-chroma/install.log)")
    port = free_port()
    data = tmp_path_factory.mktemp("chroma")
    log = (data / "chroma.log").open("wb")
    proc = subprocess.Popen([str(CHROMA), "run", "--path", str(data / "db"), "--host", "127.0.0.1", "--port",
                             str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Chroma server did not start: {(data / 'chroma.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_acl_property_chroma_server(tmp_path: Path, chroma_url: str) -> None:
    from strata.rag.index.chroma import ChromaBackend

    chunks, _ = random_corpus(seed=23)
    backend = ChromaBackend("prop", tmp_path / "c", ListSource([]), ChromaSettings(url=chroma_url))
    try:
        backend.upsert(chunks)
        backend.flush()
        assert check_acl_property(backend, chunks, seed=23) == {"s1": 1.0, "s10": 1.0, "s50": 1.0}
        backend.delete(["doc0", "doc1"])
        backend.flush()
        tokens = frozenset({"group:s50", "group:s10", "group:s1", "team:owner"})
        gone = {1, 2, 3, 4}
        assert not gone & {h.key for h in backend.search_dense(chunks[0].vector, 50, tokens)}
        assert not gone & {h.key for h in backend.search_lexical("common", 2000, tokens)}
    finally:
        backend.drop()


# ---------------------------------------------------------------- the service, with the bundled MiniLM


class CountingEmbed:
    """The bundled MiniLM (what the ``minilm`` route serves), counting every text it embeds."""

    def __init__(self, model: Any) -> None:
        self.model, self.texts = model, 0

    async def __call__(self, texts: list[str], parent: Any = None) -> list[list[float]]:
        self.texts += len(texts)
        vectors = await asyncio.to_thread(self.model.encode, texts, normalize_embeddings=True)
        return [list(map(float, v)) for v in vectors]


@pytest.fixture(scope="module")
def minilm() -> Any:
    if not HAVE_LOCAL_MODELS:
        pytest.skip("bundled models not installed (make test installs)")
    from sentence_transformers import SentenceTransformer

    from strata.engines.artifacts import resolve_artifact

    path = resolve_artifact("bundled:all-minilm-l6-v2", "test")
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


def make_service(db_url: str, data_dir: Path, model: Any) -> tuple[RagService, CountingEmbed]:
    from strata.data.blobs import BlobStore
    from strata.data.store import DatasetStore

    db = open_database(db_url)
    embed = CountingEmbed(model)
    datasets = DatasetStore(db, BlobStore(str(data_dir / "blobs")))
    return RagService(db, RagSettings(), data_dir, embed, datasets=datasets), embed


HANDBOOK = (b"<html><head><title>Staff handbook</title></head><body><h1>Annual leave</h1><p>Every employee gets "
            b"twenty-five vacation days per year, plus public holidays.</p><h1>Expenses</h1><p>Submit receipts "
            b"within thirty days.</p></body></html>")
DOCS = {
    "handbook.html": (HANDBOOK, None),
    "kubernetes.md": (b"# Deploying\n\nRun the gateway on Kubernetes with the Helm chart; set replicas to three "
                      b"for high availability.\n", None),
    "salaries.txt": (b"Salary bands for 2026: engineers earn between 80k and 140k; the bonus pool is 12 percent.",
                     ["group:finance"]),
    "cafeteria.pdf": (make_pdf(["The cafeteria serves vegetarian lunch every Friday."]), None),
}


async def fill(rag: RagService, team: str) -> str:
    col = await rag.create_collection(team, "kb", chunking={"max_tokens": 64, "overlap_tokens": 8})
    for name, (content, acl) in DOCS.items():
        info = await rag.add_document(team, col.id, name=name, content=content, acl=acl, document_id=name,
                                      attributes={"kind": name.rsplit(".", 1)[1]})
        assert info.status == "added" and info.chunk_count >= 1
    return col.id


async def test_hybrid_search_answers_from_the_right_document(db_url: str, tmp_path: Path, minilm: Any) -> None:
    rag, _ = make_service(db_url, tmp_path, minilm)
    cid = await fill(rag, "acme")
    member = Principal("acme", key_id="k1")
    for mode in ("hybrid", "dense", "lexical"):
        hits = await rag.search("acme", [cid], "how many vacation days do employees get", member, k=3, mode=mode)
        assert hits[0].document_id == "handbook.html", (mode, hits)
        assert "twenty-five vacation days" in hits[0].text and hits[0].heading == "Annual leave"
    hits = await rag.search("acme", [cid], "vegetarian food on Fridays", member, k=1, mode="dense")
    assert hits[0].document_name == "cafeteria.pdf"
    hits = await rag.search("acme", [cid], "deploy replicas", member, k=4, filters={"type": "eq", "key": "kind",
                                                                                  "value": "md"})
    assert [h.document_id for h in hits] == ["kubernetes.md"]
    with pytest.raises(NotFound):  # another team's collection does not exist for it
        await rag.search("other", [cid], "vacation", Principal("other"), k=3)
    with pytest.raises(PermissionDenied):  # a search runs as a caller of the collection's team
        await rag.search("acme", [cid], "vacation", Principal("other"), k=3)
    assert [c.id for c in await rag.list_collections("other")] == []
    await rag.close()


async def test_acl_at_retrieval_through_the_service(tmp_path: Path, minilm: Any) -> None:
    rag, _ = make_service(f"sqlite:///{tmp_path / 's.db'}", tmp_path, minilm)
    cid = await fill(rag, "acme")
    question = "what do engineers earn and how big is the bonus"
    member = await rag.search("acme", [cid], question, Principal("acme", user="bob"), k=10)
    assert member and "salaries.txt" not in {h.document_id for h in member}
    finance = await rag.search("acme", [cid], question, Principal("acme", groups=frozenset({"finance"})), k=10)
    assert finance[0].document_id == "salaries.txt"
    # re-adding the same bytes with a new ACL: no re-embedding, and the new ACL holds in every index
    before = rag.embed.texts  # type: ignore[attr-defined]
    info = await rag.add_document("acme", cid, name="salaries.txt", content=DOCS["salaries.txt"][0],
                                  acl=["user:bob"], document_id="salaries.txt")
    assert info.status == "updated" and rag.embed.texts == before + 0  # type: ignore[attr-defined]
    for mode in ("dense", "lexical"):
        bob = await rag.search("acme", [cid], question, Principal("acme", user="bob"), k=10, mode=mode)
        assert "salaries.txt" in {h.document_id for h in bob}
        fin = await rag.search("acme", [cid], question, Principal("acme", groups=frozenset({"finance"})), k=10,
                               mode=mode)
        assert "salaries.txt" not in {h.document_id for h in fin}
    await rag.close()


async def test_delete_removes_from_every_index_and_indexes_rebuild(tmp_path: Path, minilm: Any) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    rag, _ = make_service(url, tmp_path, minilm)
    cid = await fill(rag, "acme")
    who = Principal("acme")
    backend = rag._backends[cid]
    total = backend.count()
    handbook_chunks = (await rag.list_documents("acme", cid))[0].chunk_count
    await rag.remove_document("acme", cid, "handbook.html")
    for mode in ("dense", "lexical", "hybrid"):
        hits = await rag.search("acme", [cid], "vacation days per year", who, k=10, mode=mode)
        assert "handbook.html" not in {h.document_id for h in hits}
    assert backend.count() == total - handbook_chunks
    assert len(backend.dense) == backend.lexical.count() == total - handbook_chunks  # type: ignore[attr-defined]
    assert "handbook.html" not in {d.id for d in await rag.list_documents("acme", cid)}
    with pytest.raises(NotFound):
        await rag.remove_document("acme", cid, "handbook.html")
    await rag.close()
    # index files lost: a new service rebuilds them from the database
    shutil.rmtree(tmp_path / "rag" / cid)
    again, embed = make_service(url, tmp_path, minilm)
    hits = await again.search("acme", [cid], "Helm chart replicas", who, k=1)
    assert hits[0].document_id == "kubernetes.md"
    assert embed.texts == 1  # only the query: chunks were not re-embedded
    assert (tmp_path / "rag" / cid / "dense.usearch").exists()
    await again.close()


async def test_incremental_reingest_touches_only_changed_documents(tmp_path: Path, minilm: Any) -> None:
    from strata.data.records import make_records

    rag, embed = make_service(f"sqlite:///{tmp_path / 's.db'}", tmp_path, minilm)
    store = rag.datasets
    docs = {f"d{i}": f"Document {i} explains topic number {i} in two sentences. It has nothing else."
            for i in range(5)}
    v1, _ = store.add_version("acme", "kb", make_records(
        [{"id": k, "name": f"{k}.txt", "text": t} for k, t in docs.items()]), source={"kind": "test"})
    col = await rag.create_collection("acme", "kb")
    report = await rag.ingest_dataset("acme", col.id, v1)
    assert (report.added, report.updated, report.unchanged, report.removed) == (5, 0, 0, 0)
    assert embed.texts == report.embedded_chunks == 5
    changed = {**docs, "d1": "Document 1 was rewritten to talk about penguins instead."}
    del changed["d4"]
    changed["d9"] = "A new document about volcanoes."
    v2, _ = store.add_version("acme", "kb", make_records(
        [{"id": k, "name": f"{k}.txt", "text": t} for k, t in changed.items()]), source={"kind": "test"})
    embed.texts = 0
    report = await rag.ingest_dataset("acme", col.id, v2)
    assert (report.added, report.updated, report.unchanged, report.removed) == (1, 1, 3, 1)
    assert embed.texts == 2  # d1 and d9 only
    ids = {d.id for d in await rag.list_documents("acme", col.id)}
    assert ids == {"d0", "d1", "d2", "d3", "d9"}
    hits = await rag.search("acme", [col.id], "penguins", Principal("acme"), k=1)
    assert hits[0].document_id == "d1" and "penguins" in hits[0].text
    assert not await rag.search("acme", [col.id], "Document 4 explains topic number 4", Principal("acme"), k=5,
                                mode="lexical") or all(h.document_id != "d4" for h in await rag.search(
                                    "acme", [col.id], "Document 4", Principal("acme"), k=10, mode="lexical"))
    info = await rag.chunk(hits[0].chunk_id)
    assert info.document_id == "d1" and info.team == "acme"
    await rag.close()


def test_index_file_lagging_the_database_is_rebuilt(tmp_path: Path) -> None:
    """A crash between the database commit and the next HNSW save: the same number of chunks, different ones.
    Opening the collection rebuilds from the database; the stale chunk is not served."""
    from strata.rag.index.embedded import EmbeddedBackend

    chunks, _ = random_corpus(seed=5, n=200)
    old = EmbeddedBackend(tmp_path / "c", ListSource([]))
    old.upsert(chunks[:100])
    old.close()
    now = chunks[1:101]  # chunk 1 deleted, chunk 101 added, in the database only
    backend = EmbeddedBackend(tmp_path / "c", ListSource(now))
    everyone = frozenset({t for c in chunks for t in c.acl})
    hits = backend.search_dense(chunks[0].vector, 1, everyone)
    assert hits[0].key != chunks[0].key
    assert backend.search_dense(chunks[100].vector, 1, everyone)[0].key == chunks[100].key
