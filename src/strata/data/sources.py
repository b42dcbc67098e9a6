"""Reading records from files, folders and the ledger; writing them out (export).

Formats by suffix: ``.jsonl``/``.ndjson``, ``.csv`` (every value a string: CSV has no types), ``.parquet``
(pyarrow, the ``data`` extra, imported only here). A folder becomes one document record per file: ``name``
(its path in the folder, also its id), ``media_type`` and ``text`` (text, Markdown, HTML; a PDF's text when
``strata.rag.parse`` can read it, else its bytes as ``content`` with ``content_encoding: base64``).

The ledger keeps no request or response bodies (only what a request was: route, model, tokens, latency,
status, cost, tags), so a dataset made from it holds those fields, one record per request.
"""

from __future__ import annotations

import base64
import csv
import mimetypes
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from strata.data.records import Record
from strata.errors import InvalidRequest

FORMATS = ("jsonl", "csv", "parquet")
TEXT_TYPES = {".txt": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown", ".html": "text/html",
              ".htm": "text/html", ".pdf": "application/pdf", ".json": "application/json"}


def format_of(path: Path, given: str | None = None) -> str:
    fmt = (given or path.suffix.lstrip(".")).lower()
    fmt = {"ndjson": "jsonl", "pq": "parquet"}.get(fmt, fmt)
    if fmt not in FORMATS:
        raise InvalidRequest(f"{path.name}: unknown format {fmt!r}; use one of {', '.join(FORMATS)} "
                             "(or a folder of documents)", param="format")
    return fmt


def read_path(path: Path, fmt: str | None = None) -> Iterator[dict[str, Any]]:
    """Rows of a file (by format) or documents of a folder."""
    if path.is_dir():
        return read_folder(path)
    if not path.is_file():
        raise InvalidRequest(f"no such file or folder: {path}", param="path")
    return {"jsonl": read_jsonl, "csv": read_csv, "parquet": read_parquet}[format_of(path, fmt)](path)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InvalidRequest(f"{path.name} line {n}: not JSON ({exc})") from None
            if not isinstance(row, dict):
                raise InvalidRequest(f"{path.name} line {n}: a JSON object per line is needed")
            yield row


def read_csv(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        yield from (dict(row) for row in csv.DictReader(f))


def read_parquet(path: Path) -> Iterator[dict[str, Any]]:
    pq = _pyarrow_parquet()
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        yield from (jsonable(row) for row in batch.to_pylist())


def read_folder(root: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        yield document(path.relative_to(root).as_posix(), path.read_bytes())


def document(name: str, content: bytes, media_type: str | None = None) -> dict[str, Any]:
    """A document record: text when it can be had, else base64 content."""
    media_type = media_type or TEXT_TYPES.get(Path(name).suffix.lower()) or mimetypes.guess_type(name)[0] \
        or "application/octet-stream"
    text = _text_of(name, content, media_type)
    if text is not None:
        return {"name": name, "media_type": media_type, "text": text}
    return {"name": name, "media_type": media_type, "content": base64.b64encode(content).decode(),
            "content_encoding": "base64"}


def _text_of(name: str, content: bytes, media_type: str) -> str | None:
    if media_type == "application/pdf":
        try:
            from strata.rag.parse import parse_document  # RG's parser, when installed and landed
        except ImportError:
            return None
        try:
            return str(parse_document(name, content, media_type).text)
        except Exception:  # a PDF the parser cannot read stays as bytes, for a later parse step
            return None
    if media_type.startswith("text/") or media_type in ("application/json", "application/xml"):
        try:
            return content.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


@dataclass(frozen=True, slots=True)
class LedgerFilter:
    """Which captured requests: one team always (datasets never cross teams), optional route, window, status."""

    team: str
    route: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    status: int | None = None
    endpoint: str | None = None
    limit: int = 100_000


LEDGER_FIELDS = ("request_id", "started_at", "endpoint", "route", "deployment", "model", "role", "user", "tags",
                 "status", "error_type", "prompt_tokens", "completion_tokens", "latency_ms", "ttft_ms", "cost_usd",
                 "trace_id", "key_id")


def read_ledger(db: Engine, flt: LedgerFilter) -> Iterator[dict[str, Any]]:
    from strata.store.tables import LedgerRow

    q = select(LedgerRow).where(LedgerRow.team == flt.team)
    if flt.route:
        q = q.where(LedgerRow.route == flt.route)
    if flt.since:
        q = q.where(LedgerRow.started_at >= flt.since)
    if flt.until:
        q = q.where(LedgerRow.started_at < flt.until)
    if flt.status is not None:
        q = q.where(LedgerRow.status == flt.status)
    if flt.endpoint:
        q = q.where(LedgerRow.endpoint == flt.endpoint)
    with Session(db) as s:
        rows = s.scalars(q.order_by(LedgerRow.started_at, LedgerRow.id).limit(flt.limit)).all()
    for row in rows:
        data = {f: getattr(row, f) for f in LEDGER_FIELDS}
        data["id"] = f"{row.request_id}:{row.id}"  # an internal call shares its request's id
        yield jsonable(data)


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """JSON values only (datetimes as ISO strings, bytes as base64), so the hash is of what is stored."""
    out = orjson.loads(orjson.dumps(row, default=_default, option=orjson.OPT_NON_STR_KEYS))
    assert isinstance(out, dict)
    return out


def _default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def write(records: Iterable[Record], path: Path, fmt: str) -> int:
    """Export: one row per record (its data), in stored order; returns the count."""
    rows = (r.data for r in records)
    if fmt == "jsonl":
        n = 0
        with path.open("wb") as f:
            for row in rows:
                f.write(orjson.dumps(row) + b"\n")
                n += 1
        return n
    items = list(rows)
    if fmt == "csv":
        columns = list(dict.fromkeys(k for row in items for k in row))
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, columns)
            w.writeheader()
            for row in items:
                w.writerow({k: _cell(v) for k, v in row.items()})
        return len(items)
    if fmt == "parquet":
        import pyarrow as pa

        _pyarrow_parquet().write_table(pa.Table.from_pylist(items), path)
        return len(items)
    raise InvalidRequest(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}", param="format")


def _cell(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float | bool) else orjson.dumps(value).decode()


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidRequest("Parquet needs pyarrow: pip install 'strata[data]'") from None
    return pq
