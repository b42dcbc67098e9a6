"""Which embedded dense index: hnswlib, usearch, faiss-cpu (HNSW) and sqlite-vec (exact scan), measured alike.

    python bench/retrieval_libs.py --n 100000 --json-out bench/results/retrieval_libs.json

Vectors: ``--n`` × 384 float32, a mixture of 1,000 Gaussian clusters, L2-normalised (closer to sentence
embeddings than uniform noise); 200 held-out queries. Every HNSW library gets the same graph parameters
(M/connectivity 16, construction ef 100, search ef 64), cosine/inner product. Reported per library: build
time, recall@10 against exact search, p50/p95 one-query latency, resident memory growth while building,
index file size, deletion, and a 1%-selective filtered search (results / k and latency) where the library has
a filter inside the search: hnswlib's ``filter`` callback, faiss's ``IDSelectorBatch``; sqlite-vec scans
exactly, with the filter as a metadata column of the ``vec0`` table. usearch's Python API has no filter
(``Index.search`` takes none); Strata's backend filters around it (exact over the readable subset when
selective, oversampled ANN otherwise), measured in ``bench/retrieval.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DIM, K, M, EF_C, EF_S = 384, 10, 16, 100, 64


def vectors(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((1000, DIM)).astype(np.float32)
    x = centers[rng.integers(0, 1000, n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def exact(data: np.ndarray, q: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    scores = q @ data.T
    if mask is not None:
        scores[:, ~mask] = -np.inf
    return np.argsort(-scores, axis=1)[:, :k]


def timed(fn: Callable[[np.ndarray], list[int]], queries: np.ndarray) -> tuple[list[list[int]], list[float]]:
    out, lat = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q))
        lat.append((time.perf_counter() - t) * 1000)
    return out, lat


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)]))


def pct(lat: list[float], p: float) -> float:
    return round(float(np.percentile(lat, p)), 3)


def run_hnswlib(data: np.ndarray, tmp: Path) -> dict[str, Any]:
    import hnswlib

    idx = hnswlib.Index(space="ip", dim=DIM)
    idx.init_index(max_elements=len(data), M=M, ef_construction=EF_C, allow_replace_deleted=True)
    idx.add_items(data, np.arange(len(data)), num_threads=1)
    idx.set_ef(EF_S)
    idx.save_index(str(tmp / "h.bin"))
    return {"index": idx, "file": tmp / "h.bin",
            "search": lambda q: idx.knn_query(q, k=K, num_threads=1)[0][0].tolist(),
            "filtered": lambda q, allowed: idx.knn_query(q, k=K, num_threads=1,
                                                         filter=lambda i: bool(allowed[i]))[0][0].tolist(),
            "delete": lambda key: idx.mark_deleted(key)}


def run_usearch(data: np.ndarray, tmp: Path) -> dict[str, Any]:
    from usearch.index import Index

    idx = Index(ndim=DIM, metric="cos", dtype="f32", connectivity=M, expansion_add=EF_C, expansion_search=EF_S)
    idx.add(np.arange(len(data)), data, threads=1)
    idx.save(str(tmp / "u.usearch"))
    return {"index": idx, "file": tmp / "u.usearch",
            "search": lambda q: idx.search(q, K, threads=1).keys.tolist(), "filtered": None,
            "delete": lambda key: idx.remove(key)}


def run_faiss(data: np.ndarray, tmp: Path) -> dict[str, Any]:
    import faiss

    faiss.omp_set_num_threads(1)
    idx = faiss.IndexHNSWFlat(DIM, M, faiss.METRIC_INNER_PRODUCT)
    idx.hnsw.efConstruction = EF_C
    idx.add(data)
    idx.hnsw.efSearch = EF_S
    faiss.write_index(idx, str(tmp / "f.faiss"))

    def filtered(q: np.ndarray, allowed: np.ndarray) -> list[int]:
        sel = faiss.IDSelectorBatch(np.flatnonzero(allowed).astype(np.int64))
        params = faiss.SearchParametersHNSW(sel=sel, efSearch=EF_S)  # type: ignore[attr-defined]
        return [i for i in idx.search(q[None, :], K, params=params)[1][0].tolist() if i >= 0]

    return {"index": idx, "file": tmp / "f.faiss",
            "search": lambda q: idx.search(q[None, :], K)[1][0].tolist(), "filtered": filtered,
            "delete": None}  # remove_ids is not implemented for IndexHNSW


def run_sqlite_vec(data: np.ndarray, tmp: Path) -> dict[str, Any]:
    import sqlite3

    import sqlite_vec

    db = sqlite3.connect(tmp / "v.db")
    db.enable_load_extension(True)
    sqlite_vec.load(db)
    db.execute(f"create virtual table v using vec0(embedding float[{DIM}] distance_metric=cosine, grp integer)")
    groups = np.arange(len(data)) % 100
    db.executemany("insert into v(rowid, embedding, grp) values (?, ?, ?)",
                   ((i, data[i].tobytes(), int(groups[i])) for i in range(len(data))))
    db.commit()

    def search(q: np.ndarray) -> list[int]:
        rows = db.execute("select rowid from v where embedding match ? and k = ?", (q.tobytes(), K)).fetchall()
        return [r[0] for r in rows]

    def filtered(q: np.ndarray, _allowed: np.ndarray) -> list[int]:
        rows = db.execute("select rowid from v where embedding match ? and k = ? and grp = 0",
                          (q.tobytes(), K)).fetchall()
        return [r[0] for r in rows]

    return {"index": db, "file": tmp / "v.db", "search": search, "filtered": filtered,
            "delete": lambda key: db.execute("delete from v where rowid = ?", (key,))}


LIBS = {"hnswlib": run_hnswlib, "usearch": run_usearch, "faiss-cpu": run_faiss, "sqlite-vec": run_sqlite_vec}


def measure(name: str, data: np.ndarray, queries: np.ndarray, truth: np.ndarray, allowed: np.ndarray,
            ftruth: np.ndarray) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        before = rss_mb()
        t = time.perf_counter()
        try:
            lib = LIBS[name](data, Path(tmp))
        except AttributeError as exc:  # sqlite-vec: this Python's sqlite3 cannot load extensions
            return {"library": name, "error": f"{type(exc).__name__}: {exc}"}
        build = time.perf_counter() - t
        found, lat = timed(lib["search"], queries)
        row: dict[str, Any] = {"library": name, "build_s": round(build, 1), "recall@10": round(recall(found, truth), 4),
                               "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95),
                               "rss_growth_mb": round(rss_mb() - before), "file_mb": round(
                                   os.path.getsize(lib["file"]) / 2**20), "delete": lib["delete"] is not None}
        if lib["filtered"] is not None:
            ffound, flat = timed(lambda q: lib["filtered"](q, allowed), queries[:50])
            row["filtered_1pct_returned_per_k"] = round(statistics.mean(len(f) / K for f in ffound), 3)
            row["filtered_1pct_recall@10"] = round(recall(ffound, ftruth[:50]), 4)
            row["filtered_1pct_p50_ms"] = pct(flat, 50)
        return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--libs", default=",".join(LIBS))
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    data = vectors(args.n + 200)
    data, queries = data[:args.n], data[args.n:]
    truth = exact(data, queries, K)
    allowed = np.arange(args.n) % 100 == 0  # 1% readable (sqlite-vec: the same rows as grp = 0)
    ftruth = exact(data, queries, K, allowed)
    rows = []
    for name in args.libs.split(","):
        rows.append(measure(name, data, queries, truth, allowed, ftruth))
        print(json.dumps(rows[-1]), flush=True)
    if args.json_out:
        args.json_out.write_text(json.dumps({"n": args.n, "dim": DIM, "M": M, "ef_construction": EF_C,
                                             "ef_search": EF_S, "cpus": os.cpu_count(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
