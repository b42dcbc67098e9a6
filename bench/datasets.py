"""Datasets and pipelines: version creation, a pipeline's first run and its cached re-run, on synthetic
records (10% exact duplicates after normalisation, 5% near-duplicates).

    python bench/datasets.py --records 20000

Prints a table: wall and CPU seconds and records per CPU second for creating the version, the first
pipeline run (every step runs), the re-run on unchanged input (every step from the cache), and the
near-duplicate step alone.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from strata.data.blobs import BlobStore
from strata.data.pipeline import PipelineRunner, load_spec
from strata.data.records import make_records
from strata.data.store import DatasetStore
from strata.store.db import open_database

T = TypeVar("T")
WORDS = ("refund order parcel late broken invoice account password shipping address delivery return "
         "warranty discount coupon payment card charge cancel subscription upgrade").split()


def rows(n: int, seed: int = 7) -> list[dict[str, object]]:
    rng = random.Random(seed)
    out: list[dict[str, object]] = []
    for i in range(n):
        r = rng.random()
        if out and r < 0.10:
            text = str(rng.choice(out)["text"]).upper() + "  "  # an exact duplicate once normalised
        elif out and r < 0.15:
            text = str(rng.choice(out)["text"]) + " " + rng.choice(WORDS)  # a near-duplicate
        else:
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30)))
        out.append({"id": f"r{i}", "text": text, "priority": rng.randint(1, 5)})
    return out


def timed(fn: Callable[[], T]) -> tuple[T, tuple[float, float]]:
    """(result, (wall seconds, CPU seconds of this process)): on a shared machine the CPU time is the steadier."""
    t, c = time.perf_counter(), time.process_time()
    result = fn()
    return result, (time.perf_counter() - t, time.process_time() - c)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20000)
    args = ap.parse_args()
    data = rows(args.records)
    with tempfile.TemporaryDirectory() as tmp:
        db = open_database(f"sqlite:///{Path(tmp) / 'strata.db'}")
        store = DatasetStore(db, BlobStore((Path(tmp) / "datasets").as_uri()))
        (version, _), t_create = timed(lambda: store.add_version("bench", "tickets", make_records(data),
                                                                source={"kind": "records"}))
        spec = load_spec({"name": "prep", "steps": [
            {"clean": {}}, {"deduplicate": {}}, {"label": {"rules": [{"contains": "refund", "label": "billing"}],
                                                           "default": "other"}}, {"split": {"test": 0.2}}],
            "checks": [{"expect_column_values_to_not_be_null": {"column": "label"}},
                       {"expect_column_values_to_be_between": {"column": "priority", "min_value": 1,
                                                               "max_value": 5}}]})
        first, t_first = timed(lambda: PipelineRunner(store).run("bench", spec, "tickets"))
        again, t_again = timed(lambda: PipelineRunner(store).run("bench", spec, "tickets"))
        near = load_spec({"name": "near", "steps": [{"deduplicate": {"near": True, "threshold": 0.8}}]})
        near_run, t_near = timed(lambda: PipelineRunner(store).run("bench", near, "tickets"))
        db.dispose()
    n = len(data)
    print(f"{n} records; pipeline output {first.output.record_count} records; near-dedup output "
          f"{near_run.output.record_count}")
    print("| what | wall s | CPU s | records per CPU s | steps cached |")
    print("|---|---|---|---|---|")
    for what, t, cached in (("create version (hash, blob, index)", t_create, "-"),
                            ("pipeline, first run (clean, dedup, label, split, 2 checks)", t_first,
                             f"{sum(s.cached for s in first.steps)}/{len(first.steps)}"),
                            ("pipeline, re-run on unchanged input", t_again,
                             f"{sum(s.cached for s in again.steps)}/{len(again.steps)}"),
                            ("near-duplicate step (MinHash LSH, 128 perms)", t_near, "0/1")):
        print(f"| {what} | {t[0]:.2f} | {t[1]:.2f} | {n / t[1]:,.0f} | {cached} |")


if __name__ == "__main__":
    main()
