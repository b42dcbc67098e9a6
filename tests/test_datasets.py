"""Datasets through the real CLI: created from JSONL, CSV, Parquet, folders of documents; content-addressed
versions (hash stable across order and formats, same content not stored twice), immutability (an edited blob
is refused), diff, export round trips; the store itself on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from strata.data.blobs import BlobStore
from strata.data.config import DataSettings
from strata.data.lineage import Edge, Lineage
from strata.data.records import make_records
from strata.data.service import DataService
from strata.data.sources import write
from strata.data.store import DatasetStore
from strata.errors import InternalError, InvalidRequest, NotFound
from strata.store.db import open_database

ROWS = [{"id": "r1", "question": "How do I get a refund?", "answer": "Within 30 days.", "votes": 3},
        {"id": "r2", "question": "Where is my parcel?", "answer": "Track it online.", "votes": 5},
        {"id": "r3", "question": "Can I change my order?", "answer": "Before it ships.", "votes": 1}]


def strata(*args: str) -> subprocess.CompletedProcess[str]:
    """``strata ...`` in a subprocess (as tests.test_cli's, with more time: the machine is shared)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    return subprocess.run([sys.executable, "-m", "strata", *args], capture_output=True, text=True, env=clean,
                          timeout=300)


def pdf(text: str) -> bytes:
    """A one-page PDF with ``text`` (hand-built: no PDF writer needed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def ds(data_dir: Path, *args: str, code: int = 0) -> Any:
    """``strata datasets ...`` (``--json`` parsed); asserts the exit code."""
    p = strata("datasets", *args, "--data-dir", str(data_dir))
    assert p.returncode == code, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    return json.loads(p.stdout) if "--json" in args else p


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture(scope="module")
def svc(data_dir: Path) -> Iterator[DataService]:
    """The service the CLI runs on, over the same data dir (the CLI is exercised once per command; the rest
    goes through the same functions in-process: each CLI start costs seconds on a shared machine)."""
    db = open_database(f"sqlite:///{data_dir / 'strata.db'}")
    yield DataService(db, DataSettings(), data_dir)
    db.dispose()


def test_jsonl_versions_are_content_addressed_and_immutable(data_dir: Path, svc: DataService,
                                                            tmp_path: Path) -> None:
    v1 = ds(data_dir, "create", "faq", str(write_jsonl(tmp_path / "faq.jsonl", ROWS)), "--json")
    assert v1["ref"] == "faq@1" and v1["record_count"] == 3 and v1["created"] is True
    # the same records in another order are the same version: nothing new is stored
    again = ds(data_dir, "create", "faq", str(write_jsonl(tmp_path / "rev.jsonl", ROWS[::-1])))
    assert again.stdout.startswith(f"unchanged: same content as faq@1  3 records  sha256:{v1['content_hash']}")
    # a changed, a removed and an added record make version 2; version 1 is untouched
    edited: list[dict[str, Any]] = [{**ROWS[0], "answer": "Within 60 days."}, ROWS[1],
                                     {"id": "r4", "question": "Gift wrap?"}]
    v2 = svc.create_from_path("default", "faq", write_jsonl(tmp_path / "v2.jsonl", edited)).version
    assert v2.ref == "faq@2" and v2.content_hash != v1["content_hash"]
    human = ds(data_dir, "diff", "faq@1", "2").stdout
    assert "faq@1 -> faq@2: 1 added, 1 removed, 1 changed, 1 unchanged" in human
    assert {"+ r4", "- r3", "~ r1"} <= {line.strip() for line in human.splitlines()}
    ds(data_dir, "export", "faq@1", str(tmp_path / "v1.jsonl"))
    exported = [json.loads(line) for line in (tmp_path / "v1.jsonl").read_text().splitlines()]
    assert exported == ROWS  # stored order, unchanged by version 2
    by_hash = svc.store.get_version("default", "faq", v1["content_hash"][:10])
    assert by_hash.number == 1 and next(svc.store.iter_records(by_hash)).data == ROWS[0]
    listed = ds(data_dir, "list", "--json")
    assert [(d["name"], d["latest"], d["versions"]) for d in listed if d["name"] == "faq"] == [("faq", 2, 2)]


def test_an_edited_blob_is_refused_not_served(data_dir: Path, svc: DataService, tmp_path: Path) -> None:
    v = svc.create_from_path("default", "tamper", write_jsonl(tmp_path / "t.jsonl", ROWS)).version
    blob = data_dir / "datasets" / v.blob
    blob.write_text(blob.read_text().replace("Track it online.", "Ask someone else."))
    p = ds(data_dir, "show", "tamper@1", "--records", "3", code=1)
    assert "record 'r2' does not match its hash" in p.stderr


def test_csv_parquet_and_formats_round_trip(data_dir: Path, svc: DataService, tmp_path: Path) -> None:
    text_rows = [{k: str(v) for k, v in r.items()} for r in ROWS]  # CSV has no types: every value a string
    from_csv = svc.create_from_path("default", "faq-csv", write_csv(tmp_path / "faq.csv", text_rows)).version
    from_strings = svc.create_from_path("default", "faq-str", write_jsonl(tmp_path / "s.jsonl", text_rows)).version
    assert from_csv.content_hash == from_strings.content_hash
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "faq.parquet")
    from_pq = ds(data_dir, "create", "faq-pq", str(tmp_path / "faq.parquet"), "--json")
    assert from_pq["record_count"] == 3 and from_pq["source"]["kind"] == "parquet"
    assert from_pq["content_hash"] == svc.store.get_version("default", "faq", "1").content_hash  # as JSONL
    pq_version = svc.store.get_version("default", "faq-pq")
    for fmt in ("parquet", "csv", "jsonl"):
        out = tmp_path / f"export.{fmt}"
        assert write(svc.store.iter_records(pq_version), out, fmt) == 3
        back = svc.create_from_path("default", f"back-{fmt}", out).version
        expected = from_csv.content_hash if fmt == "csv" else from_pq["content_hash"]
        assert back.content_hash == expected, fmt


def test_folder_of_documents(data_dir: Path, svc: DataService, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "guides").mkdir(parents=True)
    (docs / "refunds.md").write_text("# Refunds\n\nRefunds take 5 days.\n")
    (docs / "guides" / "shipping.html").write_text("<html><body><h1>Shipping</h1><p>Two days.</p></body></html>")
    (docs / "notes.txt").write_text("Plain notes.")
    (docs / "returns.pdf").write_bytes(pdf("Returns within thirty days"))
    v = ds(data_dir, "create", "docs", str(docs), "--json")
    assert v["record_count"] == 4 and v["source"]["kind"] == "folder"
    by_id = {r.id: r.data for r in svc.store.iter_records(svc.store.get_version("default", "docs"))}
    assert set(by_id) == {"refunds.md", "guides/shipping.html", "notes.txt", "returns.pdf"}
    assert by_id["refunds.md"] == {"name": "refunds.md", "media_type": "text/markdown",
                                   "text": "# Refunds\n\nRefunds take 5 days.\n"}
    assert by_id["guides/shipping.html"]["media_type"] == "text/html"
    assert "Returns within thirty days" in by_id["returns.pdf"]["text"]


def test_bad_input_is_one_readable_error(data_dir: Path, svc: DataService, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\nnot json\n')
    p = ds(data_dir, "create", "bad", str(bad), code=1)
    assert p.stderr.strip().count("\n") == 0 and "bad.jsonl line 2: not JSON" in p.stderr
    with pytest.raises(InvalidRequest, match="duplicate id 'x'"):
        svc.create_from_path("default", "dup", write_jsonl(tmp_path / "dup.jsonl", [{"id": "x"}, {"id": "x"}]))
    with pytest.raises(NotFound, match="no dataset 'nope'"):
        svc.store.get_version("default", "nope", "1")


def test_store_on_sqlite_and_postgres(db_url: str, tmp_path: Path) -> None:
    """Teams never see each other's datasets; versions, diff and lineage work on either database."""
    db = open_database(db_url)
    try:
        store = DatasetStore(db, BlobStore(f"memory://ds-{tmp_path.name}"))
        a1, _ = store.add_version("team-a", "faq", make_records(ROWS), source={"kind": "records"})
        a2, made = store.add_version("team-a", "faq", make_records(ROWS[:2]), source={"kind": "records"})
        assert made and a2.number == 2
        b1, _ = store.add_version("team-b", "faq", make_records(ROWS[:1]), source={"kind": "records"})
        assert b1.number == 1 and b1.dataset_id != a1.dataset_id
        assert [d.team for d in store.list_datasets(["team-b"])] == ["team-b"]
        with pytest.raises(NotFound):
            store.version_by_id("team-b", a1.id)
        with pytest.raises(NotFound):
            store.get_version("team-c", "faq")
        assert store.diff(a1, a2).removed == ["r3"]
        assert [r.data for r in store.iter_records(a1)] == ROWS
        lineage = Lineage(db)
        lineage.add([Edge("record", f"{a1.id}/r1", "record", f"{a2.id}/r1"), Edge("record", f"{a2.id}/r1",
                                                                                 "chunk", "c1")], team="team-a")
        up = lineage.walk("chunk", "c1", "up")
        assert [(h.depth, h.edge.src_id) for h in up] == [(1, f"{a2.id}/r1"), (2, f"{a1.id}/r1")]
        assert [h.edge.dst_id for h in lineage.walk("record", f"{a1.id}/r1", "down")] == [f"{a2.id}/r1", "c1"]
    finally:
        db.dispose()


def test_blob_mismatch_is_an_internal_error(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'x.db'}")
    blobs = BlobStore(f"memory://tamper-{tmp_path.name}")
    store = DatasetStore(db, blobs)
    v, _ = store.add_version("t", "d", make_records(ROWS), source={"kind": "records"})
    path = blobs.path(v.blob)
    blobs.fs.pipe_file(path, blobs.fs.cat_file(path).replace(b"Within 30", b"Within 99"))
    with pytest.raises(InternalError, match="r1"):
        list(store.iter_records(v))
    db.dispose()
