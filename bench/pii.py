"""PII and secrets detectors: precision and recall per kind on a hand-written labelled set.

    python bench/pii.py --json-out bench/results/pii.json
    python bench/pii.py --data bench/data/pii_heldout.jsonl --json-out bench/results/pii_heldout.json

``--data`` picks the set: ``pii.jsonl`` (the first; the detectors' fixes came from its failures, so its
after-fix numbers are optimistic) or ``pii_heldout.jsonl`` (held out: committed before the fixed detectors ran
on it).

Runs the detectors the ``pii`` and ``secrets`` guards build (``strata.guard.pii``: ``PII_KINDS``,
``SECRET_KINDS`` through ``find``, all kinds on) on ``bench/data/pii.jsonl``: short texts, each with its
labelled spans (``start``, ``end``, ``kind``), and hard negatives with none (invalid Luhn numbers, dates, times,
version strings, order numbers, hex hashes, UUIDs, prices). The set was written and committed before any
detector ran on it.

Scoring: a found span is a true positive when it overlaps a labelled span of the same kind not already
matched; a found span matching nothing is a false positive of its kind, a labelled span nothing matched a false
negative of its kind (a span found with the wrong kind counts both ways). The "any kind" line ignores kinds
(what matters for redaction: the value is replaced either way). Both detectors scan the original text, as
two rules with ``action: redact`` would when neither's findings overlap. Stdlib and Strata only.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from strata.guard.pii import PII_KINDS, SECRET_KINDS, find

DATA = Path(__file__).parent / "data" / "pii.jsonl"
KINDS = {k.name: name for name, k in (*PII_KINDS.items(), *SECRET_KINDS.items())}  # "pii.email" -> "email"


def detect(text: str) -> list[dict[str, Any]]:
    found = find(text, list(PII_KINDS.values())) + find(text, list(SECRET_KINDS.values()))
    return [{"start": f.start, "end": f.end, "kind": KINDS[f.detector], "value": text[f.start:f.end]}
            for f in found]


def match(gold: list[dict[str, Any]], found: list[dict[str, Any]], by_kind: bool) -> tuple[list, list, list]:
    """(true positives as (gold, found) pairs, unmatched found, unmatched gold), greedy in text order."""
    used: set[int] = set()
    tps, fps = [], []
    for f in found:
        hit = next((i for i, g in enumerate(gold) if i not in used and g["start"] < f["end"]
                    and f["start"] < g["end"] and (not by_kind or g["kind"] == f["kind"])), None)
        if hit is None:
            fps.append(f)
        else:
            used.add(hit)
            tps.append((gold[hit], f))
    return tps, fps, [g for i, g in enumerate(gold) if i not in used]


def prf(tp: int, fp: int, fn: int) -> dict[str, Any]:
    return {"tp": tp, "fp": fp, "fn": fn, "precision": round(tp / (tp + fp), 3) if tp + fp else None,
            "recall": round(tp / (tp + fn), 3) if tp + fn else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    tp, fp, fn = Counter[str](), Counter[str](), Counter[str]()
    any_tp = any_fp = any_fn = 0
    failures: list[dict[str, Any]] = []
    times_us: list[float] = []
    for row in rows:
        t0 = time.perf_counter()
        found = detect(row["text"])
        times_us.append((time.perf_counter() - t0) * 1e6)
        tps, fps, fns = match(row["spans"], found, by_kind=True)
        for g, _ in tps:
            tp[g["kind"]] += 1
        for f in fps:
            fp[f["kind"]] += 1
        for g in fns:
            fn[g["kind"]] += 1
        a_tp, a_fp, a_fn = match(row["spans"], found, by_kind=False)
        any_tp, any_fp, any_fn = any_tp + len(a_tp), any_fp + len(a_fp), any_fn + len(a_fn)
        if fps or fns:
            failures.append({"id": row["id"], "category": row["category"], "text": row["text"],
                             "false_positives": fps, "false_negatives": fns})
    kinds = sorted(set(tp) | set(fp) | set(fn), key=lambda k: list(KINDS.values()).index(k)
                   if k in KINDS.values() else 99)
    per_kind = {k: prf(tp[k], fp[k], fn[k]) for k in kinds}
    overall = prf(sum(tp.values()), sum(fp.values()), sum(fn.values()))
    any_kind = prf(any_tp, any_fp, any_fn)
    negatives = [r for r in rows if not r["spans"]]
    neg_flagged = sum(1 for r in negatives if any(f["id"] == r["id"] for f in failures))
    print(f"{len(rows)} texts, {sum(len(r['spans']) for r in rows)} labelled spans, "
          f"{len(negatives)} texts with none ({neg_flagged} of them had something found)\n")
    print("| kind | labelled | found | TP | FP | FN | precision | recall |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for k, m in [*per_kind.items(), ("**overall (kind must match)**", overall), ("any kind", any_kind)]:
        cells = [m["tp"] + m["fn"], m["tp"] + m["fp"], m["tp"], m["fp"], m["fn"],
                 "-" if m["precision"] is None else f"{m['precision']:.3f}",
                 "-" if m["recall"] is None else f"{m['recall']:.3f}"]
        print(f"| {k} | " + " | ".join(str(c) for c in cells) + " |")
    print(f"\ndetector time per text (both detectors): median {statistics.median(times_us):.0f} µs, "
          f"max {max(times_us):.0f} µs, mean chars {statistics.mean(len(r['text']) for r in rows):.0f}")
    print(f"\n{len(failures)} texts with a failure:")
    for f in failures:
        print(f"  {f['id']} [{f['category']}] FP={[(x['kind'], x['value']) for x in f['false_positives']]} "
              f"FN={[(x['kind'], x['value'][:40]) for x in f['false_negatives']]}")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({
            "data": str(args.data.relative_to(Path.cwd()) if args.data.is_relative_to(Path.cwd()) else args.data),
            "texts": len(rows), "labelled_spans": sum(len(r["spans"]) for r in rows),
            "texts_without_spans": len(negatives), "texts_without_spans_flagged": neg_flagged,
            "python": platform.python_version(), "overall": overall, "any_kind": any_kind, "per_kind": per_kind,
            "time_us_per_text": {"median": round(statistics.median(times_us), 1), "max": round(max(times_us), 1)},
            "failures": failures}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
