"""Records and their content hashes.

A record's hash is the SHA-256 of its canonical JSON (keys sorted, no whitespace, UTF-8). A version's hash is
the SHA-256 over its records' ``id<TAB>hash`` lines **sorted by id**: a version is a set of records keyed by
id, so the same records in another order are the same version (export keeps the stored order). A record
without an ``id`` field gets its content hash's first 16 hex digits as id (``#2``, ``#3``… for exact copies,
which raw versions keep: removing them is the ``deduplicate`` step's job).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from strata.errors import InvalidRequest

MAX_ID = 400


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a version: ``id`` is unique in the version; ``data`` is the JSON object itself.

    Document-like records carry ``name``, ``media_type`` and ``text`` (or ``content``: base64 bytes with
    ``content_encoding: base64``), optionally ``acl`` (a list of principal tokens, ``team:x``, ``group:y``).
    """

    id: str
    content_hash: str
    data: dict[str, Any]


def canonical(data: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise InvalidRequest(f"a record is not JSON: {exc}") from None


def record_hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(data)).hexdigest()


def version_hash(records: Iterable[Record]) -> str:
    lines = sorted(f"{r.id}\t{r.content_hash}\n" for r in records)
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode())
    return digest.hexdigest()


def make_records(rows: Iterable[dict[str, Any]], id_field: str | None = "id") -> Iterator[Record]:
    """Records from JSON objects: ids from ``id_field`` (must be unique) or from the content hash."""
    seen: dict[str, int] = {}
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise InvalidRequest(f"record {n} is a {type(row).__name__}, not a JSON object")
        h = record_hash(row)
        given = row.get(id_field) if id_field else None
        if given is not None and given != "":
            rid = str(given)
            if rid in seen:
                raise InvalidRequest(f"record {n}: duplicate {id_field} {rid!r} (first at record {seen[rid]})",
                                     param=id_field)
        else:
            base = h[:16]
            rid, k = base, 1
            while rid in seen:
                k += 1
                rid = f"{base}#{k}"
        if len(rid) > MAX_ID:
            raise InvalidRequest(f"record {n}: id longer than {MAX_ID} characters", param=id_field)
        seen[rid] = n
        yield Record(rid, h, row)


def with_id(rid: str, data: dict[str, Any]) -> Record:
    return Record(rid, record_hash(data), data)
