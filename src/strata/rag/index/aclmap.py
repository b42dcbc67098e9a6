"""Which chunks a caller may read, in memory: key -> (document, ACL tokens), token -> keys, document -> keys.

Built from the database when a collection opens; kept in step by the backend on every upsert and delete.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


class AclMap:
    def __init__(self) -> None:
        self.acl: dict[int, frozenset[str]] = {}
        self.doc_of: dict[int, str] = {}
        self.postings: dict[str, set[int]] = {}
        self.by_doc: dict[str, set[int]] = {}

    def __len__(self) -> int:
        return len(self.acl)

    def add(self, key: int, document_id: str, tokens: Iterable[str]) -> None:
        self.remove([key])
        acl = frozenset(tokens)
        self.acl[key], self.doc_of[key] = acl, document_id
        for t in acl:
            self.postings.setdefault(t, set()).add(key)
        self.by_doc.setdefault(document_id, set()).add(key)

    def remove(self, keys: Iterable[int]) -> None:
        for key in keys:
            acl = self.acl.pop(key, None)
            if acl is None:
                continue
            for t in acl:
                self.postings[t].discard(key)
            doc = self.doc_of.pop(key)
            self.by_doc[doc].discard(key)
            if not self.by_doc[doc]:
                del self.by_doc[doc]

    def keys_of(self, document_ids: Sequence[str]) -> list[int]:
        return [k for d in document_ids for k in self.by_doc.get(d, ())]

    def readable(self, key: int, allowed: frozenset[str]) -> bool:
        acl = self.acl.get(key)
        return acl is not None and not acl.isdisjoint(allowed)

    def estimate(self, allowed: frozenset[str]) -> int:
        """An upper bound of the readable chunks (a chunk readable through two tokens counts twice): cheap."""
        return min(len(self.acl), sum(len(self.postings.get(t, ())) for t in allowed))

    def allowed_keys(self, allowed: frozenset[str]) -> np.ndarray:
        sets = [self.postings[t] for t in allowed if self.postings.get(t)]
        if not sets:
            return np.empty(0, dtype=np.uint64)
        keys = sets[0] if len(sets) == 1 else set().union(*sets)
        return np.fromiter(keys, dtype=np.uint64, count=len(keys))
