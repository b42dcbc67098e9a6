"""The server backend: a Chroma server (``chroma run``) over its HTTP API (v2), for dense vectors, with the ACL as
metadata (one boolean key per token, ``acl:<token>``) filtered by Chroma inside the search (``where``); BM25
stays in a local tantivy index beside it (Chroma's server has no BM25 outside its cloud search API).

Strata speaks the REST API with httpx (already a dependency) rather than ``chromadb-client``: five endpoints,
and the client would bring its own pins (opentelemetry, posthog) into the gateway's environment.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from strata.errors import UpstreamError, UpstreamUnavailable
from strata.rag.config import ChromaSettings
from strata.rag.index.base import ChunkSource, IndexedChunk, IndexHit
from strata.rag.index.lexical import LexicalIndex

logger = logging.getLogger(__name__)
BATCH = 1000
PREFIX = "acl:"


def acl_where(allowed: frozenset[str]) -> dict[str, Any]:
    terms: list[dict[str, Any]] = [{f"{PREFIX}{t}": {"$eq": True}} for t in sorted(allowed)]
    return terms[0] if len(terms) == 1 else {"$or": terms}


class ChromaBackend:
    name = "chroma"

    def __init__(self, collection_id: str, path: Path, source: ChunkSource, cfg: ChromaSettings,
                 timeout: float = 60.0) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.http = httpx.Client(base_url=f"{cfg.url.rstrip('/')}/api/v2/tenants/{cfg.tenant}/databases/"
                                 f"{cfg.database}", timeout=timeout)
        self.name_on_server = f"strata-{collection_id}"
        self.lexical = LexicalIndex(path / "lexical")
        self._docs: dict[str, set[int]] = {}
        self.cid = self._collection()
        total = 0
        for key, doc, _acl in source.acl_rows():
            self._docs.setdefault(doc, set()).add(key)
            total += 1
        if total and (self._count() != total or self.lexical.count() != total):
            logger.info("rebuilding the indexes of %s from the database (%d chunks)", collection_id, total)
            self._rebuild(source)

    def _call(self, method: str, url: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, url, **kw)
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(f"Chroma server unreachable: {exc}") from None
        if r.status_code >= 400:
            raise UpstreamError(f"Chroma answered {r.status_code}: {r.text[:300]}")
        return r.json() if r.content else None

    def _collection(self) -> str:
        body = {"name": self.name_on_server, "get_or_create": True,
                "configuration": {"hnsw": {"space": "cosine"}}}
        return str(self._call("POST", "/collections", json=body)["id"])

    def _count(self) -> int:
        return int(self._call("GET", f"/collections/{self.cid}/count"))

    def _rebuild(self, source: ChunkSource) -> None:
        self._call("DELETE", f"/collections/{self.name_on_server}")
        self.cid = self._collection()
        self.lexical.drop()
        self.lexical = LexicalIndex(self.path / "lexical")
        batch: list[IndexedChunk] = []
        for c in source.chunks():
            batch.append(c)
            if len(batch) >= BATCH:
                self.upsert(batch)
                batch = []
        self.upsert(batch)
        self.flush()

    def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        for i in range(0, len(chunks), BATCH):
            part = chunks[i:i + BATCH]
            self._call("POST", f"/collections/{self.cid}/upsert", json={
                "ids": [str(c.key) for c in part],
                "embeddings": [np.asarray(c.vector, dtype=np.float32).tolist() for c in part],
                "metadatas": [{"doc": c.document_id, **{f"{PREFIX}{t}": True for t in c.acl}} for c in part]})
        self.lexical.upsert(chunks)
        for c in chunks:
            self._docs.setdefault(c.document_id, set()).add(c.key)

    def delete(self, document_ids: Sequence[str]) -> None:
        keys = [str(k) for d in document_ids for k in self._docs.pop(d, ())]
        for i in range(0, len(keys), BATCH):
            self._call("POST", f"/collections/{self.cid}/delete", json={"ids": keys[i:i + BATCH]})
        self.lexical.delete(document_ids)

    def flush(self) -> None:
        self.lexical.commit()

    def search_dense(self, vector: np.ndarray, k: int, allowed: frozenset[str]) -> list[IndexHit]:
        if not allowed or k <= 0 or not self._docs:
            return []
        body = {"query_embeddings": [np.asarray(vector, dtype=np.float32).tolist()], "n_results": k,
                "where": acl_where(allowed), "include": ["distances"]}
        out = self._call("POST", f"/collections/{self.cid}/query", json=body)
        return [IndexHit(int(i), 1.0 - float(d)) for i, d in zip(out["ids"][0], out["distances"][0], strict=True)]

    def search_lexical(self, query: str, k: int, allowed: frozenset[str]) -> list[IndexHit]:
        return self.lexical.search(query, k, allowed)

    def count(self) -> int:
        return sum(len(v) for v in self._docs.values())

    def close(self) -> None:
        self.flush()
        self.http.close()

    def drop(self) -> None:
        self._call("DELETE", f"/collections/{self.name_on_server}")
        self.lexical.drop()
        shutil.rmtree(self.path, ignore_errors=True)
        self.http.close()
