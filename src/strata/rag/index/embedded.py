"""The embedded default: usearch (HNSW, one file) for dense, tantivy (BM25) for lexical, no server.

Filtered dense search, so that a caller gets k readable chunks whenever k exist:

* the readable share is estimated from the ACL postings; at or below ``exact_below`` (or when few chunks are
  readable) the search is exact over the readable subset only (their vectors fetched by key, one matrix
  product): selective filters are the ones ANN fails on, and they are the cheap ones to scan;
* otherwise ANN is asked for ``k / share`` × 2 candidates, the unreadable dropped; while fewer than k remain, the
  candidate count (and the search's expansion) grows fourfold; past the whole index it ends in the exact scan.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from strata.rag.index.aclmap import AclMap
from strata.rag.index.base import ChunkSource, IndexedChunk, IndexHit
from strata.rag.index.lexical import LexicalIndex

logger = logging.getLogger(__name__)
EXACT_BATCH = 65536
REBUILD_BATCH = 4096
SAVE_INTERVAL = 5.0


class EmbeddedBackend:
    name = "embedded"

    def __init__(self, path: Path, source: ChunkSource, *, exact_below: float = 0.05, dtype: str = "f32",
                 connectivity: int = 16, expansion_add: int = 128, expansion_search: int = 64) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.exact_below = exact_below
        self.dtype, self.connectivity, self.expansion_add = dtype, connectivity, expansion_add
        self.expansion_search = expansion_search
        self.dense: Any = None
        self.lexical = LexicalIndex(path / "lexical")
        self.acl = AclMap()
        self._dirty = False
        self._saved_at = 0.0
        self._open(source)

    @property
    def _dense_file(self) -> Path:
        return self.path / "dense.usearch"

    def _new_dense(self, dim: int) -> Any:
        from usearch.index import Index

        return Index(ndim=dim, metric="cos", dtype=self.dtype, connectivity=self.connectivity,
                     expansion_add=self.expansion_add, expansion_search=self.expansion_search)

    def _open(self, source: ChunkSource) -> None:
        for key, doc, tokens in source.acl_rows():
            self.acl.add(key, doc, tokens)
        if self._dense_file.exists():
            from usearch.index import Index

            meta = Index.metadata(str(self._dense_file))
            self.dense = self._new_dense(int(meta["dimensions"])) if meta else None
            if self.dense is not None:
                self.dense.load(str(self._dense_file))
        if len(self.acl) and (self.dense is None or not self._same_keys() or self.lexical.count() != len(self.acl)):
            logger.info("rebuilding the indexes of %s from the database (%d chunks)", self.path.name, len(self.acl))
            self._rebuild(source)

    def _same_keys(self) -> bool:
        keys = np.asarray(self.dense.keys, dtype=np.uint64)
        return len(keys) == len(self.acl) and bool(np.isin(keys, np.fromiter(
            self.acl.acl.keys(), dtype=np.uint64, count=len(self.acl))).all())

    def _rebuild(self, source: ChunkSource) -> None:
        self.dense = None
        self._dense_file.unlink(missing_ok=True)
        self.lexical.drop()
        self.lexical = LexicalIndex(self.path / "lexical")
        batch: list[IndexedChunk] = []
        for c in source.chunks():
            batch.append(c)
            if len(batch) >= REBUILD_BATCH:
                self.upsert(batch)
                batch = []
        self.upsert(batch)
        self.flush(force=True)

    def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        if not chunks:
            return
        vectors = np.stack([np.asarray(c.vector, dtype=np.float32) for c in chunks])
        keys = np.fromiter((c.key for c in chunks), dtype=np.uint64, count=len(chunks))
        if self.dense is None:
            self.dense = self._new_dense(vectors.shape[1])
        present = [int(k) for k in keys if k in self.dense]
        if present:
            self.dense.remove(present)
        self.dense.add(keys, vectors, threads=1)
        self.lexical.upsert(chunks)
        for c in chunks:
            self.acl.add(c.key, c.document_id, c.acl)
        self._dirty = True

    def delete(self, document_ids: Sequence[str]) -> None:
        keys = self.acl.keys_of(document_ids)
        if keys and self.dense is not None:
            self.dense.remove(keys)
        self.lexical.delete(document_ids)
        self.acl.remove(keys)
        self._dirty = True

    def flush(self, force: bool = False) -> None:
        """Changes become visible to BM25 now; the HNSW file is rewritten whole, so at most every
        ``SAVE_INTERVAL`` seconds (and on close): after a crash, a file that lags the database is rebuilt."""
        if not self._dirty:
            return
        self.lexical.commit()
        if self.dense is not None and (force or time.monotonic() - self._saved_at >= SAVE_INTERVAL):
            tmp = self._dense_file.with_suffix(".tmp")
            self.dense.save(str(tmp))
            tmp.replace(self._dense_file)
            self._saved_at = time.monotonic()
            self._dirty = False

    def search_dense(self, vector: np.ndarray, k: int, allowed: frozenset[str]) -> list[IndexHit]:
        total = len(self.acl)
        estimate = self.acl.estimate(allowed)
        if self.dense is None or estimate == 0 or k <= 0:
            return []
        q = np.asarray(vector, dtype=np.float32)
        share = estimate / total
        if share <= self.exact_below or estimate <= 4 * k:
            return self._exact(q, k, allowed)
        want = min(total, math.ceil(k / share * 2) + k)
        base_ef = self.expansion_search
        while True:
            self.dense.expansion_search = max(base_ef, want)
            matches = self.dense.search(q, want, threads=1)
            hits = [IndexHit(int(key), 1.0 - float(d)) for key, d in zip(matches.keys, matches.distances, strict=True)
                    if self.acl.readable(int(key), allowed)]
            if len(hits) >= k:
                self.dense.expansion_search = base_ef
                return hits[:k]
            if want >= total:
                break
            want = min(total, want * 4)
        self.dense.expansion_search = base_ef
        return self._exact(q, k, allowed)

    def _exact(self, q: np.ndarray, k: int, allowed: frozenset[str]) -> list[IndexHit]:
        keys = self.acl.allowed_keys(allowed)
        qn = q / (np.linalg.norm(q) or 1.0)
        best_keys: list[np.ndarray] = []
        best_scores: list[np.ndarray] = []
        for i in range(0, len(keys), EXACT_BATCH):
            part = keys[i:i + EXACT_BATCH]
            vecs = np.asarray(self.dense.get(part), dtype=np.float32)
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
            scores = vecs @ qn
            top = np.argpartition(-scores, min(k, len(scores)) - 1)[:k] if len(scores) > k else np.arange(len(scores))
            best_keys.append(part[top])
            best_scores.append(scores[top])
        if not best_keys:
            return []
        all_keys, all_scores = np.concatenate(best_keys), np.concatenate(best_scores)
        order = np.argsort(-all_scores)[:k]
        return [IndexHit(int(all_keys[i]), float(all_scores[i])) for i in order]

    def search_lexical(self, query: str, k: int, allowed: frozenset[str]) -> list[IndexHit]:
        return self.lexical.search(query, k, allowed)

    def count(self) -> int:
        return len(self.acl)

    def close(self) -> None:
        self.flush(force=True)

    def drop(self) -> None:
        self.dense = None
        self.lexical.drop()
        shutil.rmtree(self.path, ignore_errors=True)
