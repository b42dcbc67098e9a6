"""Fusion and re-ranking: reciprocal rank fusion of ranked lists, attribute filters, the re-ranking hook."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from strata.errors import InvalidRequest
from strata.rag.index.base import IndexHit

COMPARISONS = {"eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"}


def rrf(rankings: Sequence[tuple[float, Sequence[IndexHit]]], k: int) -> list[IndexHit]:
    """score(key) = Σ weight / (k + rank), rank from 1; ties keep the first ranking's order."""
    scores: dict[int, float] = {}
    for weight, hits in rankings:
        for rank, hit in enumerate(hits, 1):
            scores[hit.key] = scores.get(hit.key, 0.0) + weight / (k + rank)
    return [IndexHit(key, s) for key, s in sorted(scores.items(), key=lambda kv: -kv[1])]


def merge_by_score(lists: Sequence[Sequence[IndexHit]]) -> list[IndexHit]:
    return sorted((h for hits in lists for h in hits), key=lambda h: -h.score)


def check_filter(f: dict[str, Any] | None) -> None:
    if f is None:
        return
    kind = f.get("type")
    if kind in ("and", "or"):
        subs = f.get("filters")
        if not isinstance(subs, list):
            raise InvalidRequest("a compound filter needs a list of filters", param="filters")
        for sub in subs:
            check_filter(sub)
    elif kind in COMPARISONS:
        if not isinstance(f.get("key"), str) or "value" not in f:
            raise InvalidRequest("a comparison filter needs key and value", param="filters")
    else:
        raise InvalidRequest(f"unknown filter type {kind!r}", param="filters")


def matches(f: dict[str, Any] | None, attributes: dict[str, Any]) -> bool:
    """OpenAI's vector store filters: comparison (eq, ne, gt, gte, lt, lte, in, nin) and compound (and, or)."""
    if f is None:
        return True
    kind = f["type"]
    if kind == "and":
        return all(matches(sub, attributes) for sub in f["filters"])
    if kind == "or":
        return any(matches(sub, attributes) for sub in f["filters"])
    have, want = attributes.get(f["key"]), f["value"]
    if kind == "eq":
        return bool(have == want)
    if kind == "ne":
        return bool(have != want)
    if kind in ("in", "nin"):
        inside = isinstance(want, list) and have in want
        return inside if kind == "in" else not inside
    try:
        return bool({"gt": have > want, "gte": have >= want, "lt": have < want, "lte": have <= want}[kind])
    except TypeError:
        return False


class SimilarityReranker:
    """A small re-ranking hook that needs no extra model: cosine between the query's embedding and each hit's
    text embedded with the same route. A cross-encoder plugs in the same way (``Reranker`` protocol)."""

    def __init__(self, embed: Callable[[list[str]], Awaitable[list[list[float]]]]) -> None:
        self.embed = embed

    async def __call__(self, query: str, hits: list[Any]) -> list[Any]:
        if not hits:
            return hits
        vectors = np.asarray(await self.embed([query, *[h.text for h in hits]]), dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        scores = vectors[1:] @ vectors[0]
        order = np.argsort(-scores, kind="stable")
        from dataclasses import replace

        return [replace(hits[i], score=float(scores[i])) for i in order]
