"""The index protocol every backend implements, and what goes in and out of it.

ACL is part of the protocol: ``allowed`` is the caller's token set and a backend must only ever return chunks
whose ACL shares a token with it, and must return ``k`` of them whenever ``k`` readable matches exist.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class IndexedChunk:
    """One chunk as an index sees it; ``key`` is the chunk's integer id (unique within a collection)."""

    key: int
    document_id: str
    text: str
    acl: Sequence[str]
    vector: np.ndarray
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IndexHit:
    key: int
    score: float  # higher is better (cosine similarity for dense, BM25 for lexical)


class ChunkSource(Protocol):
    """The database's view of a collection, for a backend to restore its ACL map or rebuild its files."""

    def acl_rows(self) -> Iterator[tuple[int, str, Sequence[str]]]:
        """(key, document id, ACL tokens) of every chunk."""

    def chunks(self) -> Iterator[IndexedChunk]: ...


class IndexBackend(Protocol):
    """One collection's indexes. Calls are synchronous (the service runs them off the event loop)."""

    name: str

    def upsert(self, chunks: Sequence[IndexedChunk]) -> None: ...

    def delete(self, document_ids: Sequence[str]) -> None:
        """Remove every chunk of these documents from every index the backend keeps."""

    def search_dense(self, vector: np.ndarray, k: int, allowed: frozenset[str]) -> list[IndexHit]: ...

    def search_lexical(self, query: str, k: int, allowed: frozenset[str]) -> list[IndexHit]: ...

    def flush(self) -> None:
        """Make the changes so far durable and visible (called after each document or batch)."""

    def count(self) -> int: ...

    def close(self) -> None: ...

    def drop(self) -> None:
        """Delete the collection's index files or server-side data."""
