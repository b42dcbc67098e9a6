"""Where version records live: ``data.storage_url`` (any fsspec URL) or ``<data_dir>/datasets``.

A version's records are one JSON-lines blob ``{"id", "hash", "data"}`` per line, at a path named by the
version's content hash, written once (a blob already there is the same content and is left alone).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from strata.data.records import Record
from strata.errors import ConfigError, InternalError

log = logging.getLogger(__name__)


class BlobStore:
    def __init__(self, url: str) -> None:
        import fsspec  # imported when a dataset is first touched, not with strata

        try:
            self.fs, root = fsspec.core.url_to_fs(url)
        except (ValueError, ImportError) as exc:
            raise ConfigError(f"data.storage_url {url!r}: {exc}") from None
        self.url = url
        self.root = root.rstrip("/")

    @classmethod
    def for_settings(cls, storage_url: str | None, data_dir: Path) -> BlobStore:
        return cls(storage_url or (data_dir.resolve() / "datasets").as_uri())

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def exists(self, name: str) -> bool:
        return bool(self.fs.exists(self.path(name)))

    def write_records(self, name: str, records: Iterable[Record], extra: dict[str, Any] | None = None) -> None:
        """Write once: to a temporary name, then moved into place, so a reader never sees half a blob."""
        if self.exists(name):
            return
        final = self.path(name)
        tmp = f"{final}.{uuid.uuid4().hex}.tmp"
        parent = final.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        with self.fs.open(tmp, "wb") as f:
            for r in records:
                line: dict[str, Any] = {"id": r.id, "hash": r.content_hash, "data": r.data}
                if extra and r.id in extra:
                    line["x"] = extra[r.id]
                f.write(orjson.dumps(line) + b"\n")
        self.fs.mv(tmp, final)

    def read_lines(self, name: str) -> Iterator[dict[str, Any]]:
        try:
            with self.fs.open(self.path(name), "rb") as f:
                for raw in f:
                    if raw.strip():
                        yield orjson.loads(raw)
        except FileNotFoundError:
            raise InternalError(f"dataset blob {name} is missing from {self.url}") from None
