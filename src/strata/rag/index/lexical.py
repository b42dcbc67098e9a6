"""BM25 over tantivy: one index directory per collection; the ACL is a multi-valued raw field, so a lexical
search filters inside the engine (a boolean query: the words, and any of the caller's tokens) and its top k are
the top k readable chunks. Deletes are by document id; commits make them visible."""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from strata.rag.index.base import IndexedChunk, IndexHit

logger = logging.getLogger(__name__)
_WORD = re.compile(r"\w+")


class LexicalIndex:
    def __init__(self, path: Path, heap_bytes: int = 64 * 2**20) -> None:
        import tantivy

        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        sb = tantivy.SchemaBuilder()
        sb.add_unsigned_field("key", stored=True, indexed=True, fast=True)
        sb.add_text_field("doc", stored=False, tokenizer_name="raw")
        sb.add_text_field("acl", stored=False, tokenizer_name="raw")
        sb.add_text_field("text", stored=False, tokenizer_name="en_stem")
        self._tantivy = tantivy
        self.index = tantivy.Index(sb.build(), path=str(path), reuse=True)
        self._heap = heap_bytes
        self._writer: Any = None

    def _w(self) -> Any:
        if self._writer is None:
            self._writer = self.index.writer(heap_size=self._heap, num_threads=1)
        return self._writer

    def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        """Add chunks; keys are never reused (a changed document gets new chunks), so nothing is replaced."""
        w = self._w()
        for c in chunks:
            doc = self._tantivy.Document()
            doc.add_unsigned("key", c.key)
            doc.add_text("doc", c.document_id)
            doc.add_text("text", c.text)
            for token in c.acl:
                doc.add_text("acl", token)
            w.add_document(doc)

    def delete(self, document_ids: Sequence[str]) -> None:
        w = self._w()
        for doc_id in document_ids:
            w.delete_documents_by_term("doc", doc_id)

    def commit(self) -> None:
        """Durable and visible to the next search; the writer stays open (merges go on in its threads)."""
        if self._writer is not None:
            self._writer.commit()
            self.index.reload()

    def search(self, query: str, k: int, allowed: frozenset[str]) -> list[IndexHit]:
        words = _WORD.findall(query)
        if not words or not allowed or k <= 0:
            return []
        t = self._tantivy
        text_q = self.index.parse_query(" ".join(words), ["text"])
        acl_q = t.Query.term_set_query(self.index.schema, "acl", sorted(allowed))
        q = t.Query.boolean_query([(t.Occur.Must, text_q), (t.Occur.Must, acl_q)])
        searcher = self.index.searcher()
        out = []
        for score, address in searcher.search(q, k).hits:
            out.append(IndexHit(int(searcher.doc(address)["key"][0]), float(score)))
        return out

    def count(self) -> int:
        return int(self.index.searcher().num_docs)

    def close(self) -> None:
        self.commit()
        if self._writer is not None:
            self._writer.wait_merging_threads()
            self._writer = None

    def drop(self) -> None:
        self._writer = None
        shutil.rmtree(self.path, ignore_errors=True)
