"""RAG retrieval benchmarks: quality (dense, BM25, hybrid) and the index backends at scale.

    python bench/retrieval.py quality --json-out bench/results/retrieval_quality.json
    python bench/retrieval.py scale --n 100000 --backends embedded,chroma --json-out bench/results/retrieval_scale.json

``quality``: no public IR test collection is packaged on PyPI or npm (searched the package lists for BEIR,
SciFact, NFCorpus, Cranfield, MS MARCO, Vaswani, CISI; ``ir-datasets`` and ``beir`` download at run time), so
the collection is built from TruthfulQA (``../shared/data/truthfulqa``, Apache-2.0): for each of the 817
questions one document holds its correct answers and one its incorrect answers (1,634 documents); the query is
the question, the one relevant document its correct answers. Hard on purpose: the incorrect-answers document
of the same question shares its words. Each document goes through ``RagService`` (parse, chunk, embed with the
bundled MiniLM, index on the embedded backend) and each question is searched as the owning team in three
modes; recall@10 and nDCG@10 (one relevant document, so nDCG = 1/log2(rank+1)).

``scale``: ``--n`` synthetic 384-d vectors (the mixture of ``bench/retrieval_libs.py``), each chunk's ACL with
exact-share groups (``s1``: 1%, ``s10``: 10%, ``s50``: 50%) plus ``team:all``. Per backend: ingest throughput
(upsert of 4,096-chunk batches, then flush), unfiltered search recall@10 against exact search and p50/p95
latency (``team:all``), then filtered search at each share: results returned / k, recall@10 against the exact
top 10 of the readable subset, p50/p95. The server backend runs its own Chroma (``.venv-chroma``) on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval_libs import exact, pct, vectors  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRUTHFULQA = ROOT.parent / "shared" / "data" / "truthfulqa" / "TruthfulQA.csv"
K = 10
SHARES = {"s1": 0.01, "s10": 0.10, "s50": 0.50}


# ---------------------------------------------------------------- quality


def truthfulqa() -> tuple[dict[str, str], list[tuple[str, str]]]:
    docs: dict[str, str] = {}
    queries: list[tuple[str, str]] = []
    with TRUTHFULQA.open(newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            good = "; ".join(dict.fromkeys([row["Best Answer"], *row["Correct Answers"].split("; ")]))
            docs[f"q{i}-correct"] = good
            docs[f"q{i}-incorrect"] = row["Incorrect Answers"]
            queries.append((row["Question"], f"q{i}-correct"))
    return docs, queries


async def quality(args: argparse.Namespace) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    from strata.engines.artifacts import resolve_artifact
    from strata.rag.acl import Principal
    from strata.rag.config import RagSettings
    from strata.rag.service import RagService
    from strata.store.db import open_database

    model = SentenceTransformer(str(resolve_artifact("bundled:all-minilm-l6-v2", "bench")), device="cpu",
                                local_files_only=True)

    docs, queries = truthfulqa()
    # every text embedded once, in batches, up front: the same vectors the service would get one by one
    texts = list(dict.fromkeys([*docs.values(), *(q for q, _ in queries)]))
    t = time.perf_counter()
    cache = dict(zip(texts, model.encode(texts, batch_size=64, normalize_embeddings=True).tolist(), strict=True))
    embed_s = time.perf_counter() - t

    async def embed(texts: list[str], parent: Any = None) -> list[list[float]]:
        missing = [t for t in texts if t not in cache]
        if missing:
            cache.update(zip(missing, model.encode(missing, normalize_embeddings=True).tolist(), strict=True))
        return [cache[t] for t in texts]

    tmp = Path(tempfile.mkdtemp())
    rag = RagService(open_database(f"sqlite:///{tmp / 'b.db'}"), RagSettings(), tmp, embed)
    col = await rag.create_collection("bench", "truthfulqa")
    t = time.perf_counter()
    for doc_id, text in docs.items():
        await rag.add_document("bench", col.id, name=f"{doc_id}.txt", content=text.encode(), document_id=doc_id)
    ingest_s = time.perf_counter() - t
    who = Principal("bench")
    out: dict[str, Any] = {"documents": len(docs), "queries": len(queries), "embed_s": round(embed_s, 1),
                           "index_s": round(ingest_s, 1)}
    for mode in ("dense", "lexical", "hybrid"):
        recall, ndcg, lat = [], [], []
        for question, relevant in queries:
            t = time.perf_counter()
            hits = await rag.search("bench", [col.id], question, who, k=K, mode=mode)
            lat.append((time.perf_counter() - t) * 1000)
            ranked = list(dict.fromkeys(h.document_id for h in hits))
            rank = ranked.index(relevant) + 1 if relevant in ranked else None
            recall.append(1.0 if rank else 0.0)
            ndcg.append(1 / math.log2(rank + 1) if rank else 0.0)
        out[mode] = {"recall@10": round(float(np.mean(recall)), 4), "ndcg@10": round(float(np.mean(ndcg)), 4),
                     "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95)}
        print(mode, json.dumps(out[mode]), flush=True)
    await rag.close()
    return out


# ---------------------------------------------------------------- scale


def acl_of(n: int, seed: int = 3) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    acls = [["team:all"] for _ in range(n)]
    for group, share in SHARES.items():
        for i in rng.choice(n, int(n * share), replace=False):
            acls[i].append(f"group:{group}")
    return acls


class Empty:
    def acl_rows(self) -> Iterator[tuple[int, str, list[str]]]:
        return iter(())

    def chunks(self) -> Iterator[Any]:
        return iter(())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def open_backend(name: str, path: Path) -> tuple[Any, Any]:
    if name == "embedded":
        from strata.rag.index.embedded import EmbeddedBackend

        return EmbeddedBackend(path, Empty()), None
    import httpx

    from strata.rag.config import ChromaSettings
    from strata.rag.index.chroma import ChromaBackend

    port = free_port()
    proc = subprocess.Popen([str(ROOT / ".venv-chroma/bin/chroma"), "run", "--path", str(path / "server"),
                             "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    return ChromaBackend("bench", path / "c", Empty(), ChromaSettings(url=url), timeout=600), proc


def scale_one(name: str, data: np.ndarray, queries: np.ndarray, acls: list[list[str]]) -> dict[str, Any]:
    from strata.rag.index.base import IndexedChunk

    tmp = Path(tempfile.mkdtemp())
    backend, proc = open_backend(name, tmp)
    try:
        t = time.perf_counter()
        for i in range(0, len(data), 4096):
            backend.upsert([IndexedChunk(j + 1, f"d{j}", "common", acls[j], data[j])
                            for j in range(i, min(i + 4096, len(data)))])
        backend.flush()
        ingest = time.perf_counter() - t
        row: dict[str, Any] = {"backend": name, "n": len(data), "ingest_s": round(ingest, 1),
                               "ingest_per_s": round(len(data) / ingest)}
        row["unfiltered"] = measure(backend, data, queries, frozenset({"team:all"}), None)
        for group in SHARES:
            mask = np.fromiter((f"group:{group}" in a for a in acls), dtype=bool, count=len(acls))
            row[group] = measure(backend, data, queries[:100], frozenset({f"group:{group}"}), mask)
        print(json.dumps(row), flush=True)
        return row
    finally:
        backend.drop() if proc is not None else backend.close()
        if proc is not None:
            proc.terminate()
            proc.wait(30)


def measure(backend: Any, data: np.ndarray, queries: np.ndarray, allowed: frozenset[str],
            mask: np.ndarray | None) -> dict[str, Any]:
    truth = exact(data, queries, K, mask) + 1  # keys are row + 1
    lat, recall, returned = [], [], []
    for q, want in zip(queries, truth, strict=True):
        t = time.perf_counter()
        hits = backend.search_dense(q, K, allowed)
        lat.append((time.perf_counter() - t) * 1000)
        keys = {h.key for h in hits}
        returned.append(len(hits) / K)
        recall.append(len(keys & set(want.tolist())) / K)
    return {"returned_per_k": round(float(np.mean(returned)), 4), "recall@10": round(float(np.mean(recall)), 4),
            "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95)}


def scale(args: argparse.Namespace) -> dict[str, Any]:
    data = vectors(args.n + 200, seed=11)
    data, queries = data[:args.n], data[args.n:]
    acls = acl_of(args.n)
    rows = [scale_one(b, data, queries, acls) for b in args.backends.split(",")]
    return {"n": args.n, "dim": data.shape[1], "cpus": os.cpu_count(), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["quality", "scale"])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--backends", default="embedded,chroma")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    result = asyncio.run(quality(args)) if args.part == "quality" else scale(args)
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
