"""Prompt-injection detector benchmark: heuristics only vs classifier vs combined, in and out of distribution.

    python bench/injection.py --json-out bench/results/injection.json

Scores the shipped detector (``src/strata/guard/injection_model.json``, trained by
``python -m strata.guard.train_injection``) through its own scoring path, with the bundled MiniLM embedding
locally (sentence-transformers, the model directory the embeddings route serves) on:

- **test**: the 20% test split of deepset/prompt-injections (train split file, ``../shared/data``), recreated
  from the seed stored with the weights; never seen by training or calibration. In distribution.
- **ood**: ``bench/data/injection_ood.jsonl``, written by hand before any model was trained and never used for
  tuning (benign prompts that look suspicious; injections unlike deepset's: indirect in documents and tool
  outputs, obfuscated, multilingual, role-play, exfiltration). Its ``kind`` column gives a per-kind breakdown.

For each mode: AUC; TPR at 1% and 5% FPR read off that set's own ROC (the usual figure); and the TPR and FPR a
user actually gets with the thresholds calibrated on the calibration split (what ships). Also the detector's
own work per text (dot product and rules, embedding excluded).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from strata.guard.injection import InjectionModel
from strata.guard.injection_rules import heuristic_score
from strata.guard.train_injection import DATA, MODES, embed_fn, load_rows, local_encoder, metrics, score_all, split

OOD = Path(__file__).parent / "data" / "injection_ood.jsonl"


def evaluate(model: InjectionModel, rows: list[dict[str, Any]], embed: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    texts, labels = [r["text"] for r in rows], np.array([int(r["label"]) for r in rows])
    scores = score_all(model, texts, embed)
    out: dict[str, Any] = {m: metrics(scores[m], labels, model.thresholds[m]) for m in MODES}
    by_kind: dict[str, list[float]] = defaultdict(list)
    t = model.thresholds["combined"]["fpr_0.01"]
    for r, s in zip(rows, scores["combined"], strict=True):
        by_kind[r.get("kind", "all")].append(float(s > t))
    kinds = {k: {"n": len(v), "flagged": round(sum(v) / len(v), 3)} for k, v in sorted(by_kind.items())}
    return out, kinds


def own_cost(model: InjectionModel, texts: list[str]) -> dict[str, float]:
    """Median microseconds per text of the detector's own work: rules, and one dot product (no embedding)."""
    vec = np.random.default_rng(0).normal(size=(1, model.weights.shape[0]))
    rules, dots = [], []
    for text in texts:
        t0 = time.perf_counter()
        heuristic_score(text)
        t1 = time.perf_counter()
        model.classify(vec)
        t2 = time.perf_counter()
        rules.append(t1 - t0)
        dots.append(t2 - t1)
    return {"rules_us_p50": round(statistics.median(rules) * 1e6, 1),
            "rules_us_max": round(max(rules) * 1e6, 1),
            "dot_us_p50": round(statistics.median(dots) * 1e6, 1)}


def table(name: str, result: dict[str, Any]) -> list[str]:
    lines = [f"{name:<6} {'mode':<11} {'AUC':>6} {'TPR@1%':>7} {'TPR@5%':>7} | calibrated 1%: TPR  FPR | 5%: TPR  FPR"]
    for mode, m in result.items():
        lines.append(f"{'':<6} {mode:<11} {m['auc']:>6.3f} {m['tpr_at_fpr_0.01']:>7.3f} {m['tpr_at_fpr_0.05']:>7.3f} |"
                     f"       {m['calibrated_0.01_tpr']:>8.3f} {m['calibrated_0.01_fpr']:>5.3f} |"
                     f" {m['calibrated_0.05_tpr']:>7.3f} {m['calibrated_0.05_fpr']:>5.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    model = InjectionModel.load()
    info = model.meta["data"]
    if hashlib.sha256(args.data.read_bytes()).hexdigest() != info["sha256"]:
        raise SystemExit(f"{args.data} is not the file the shipped weights were trained on")
    rows = load_rows(args.data)
    parts = split([int(r["label"]) for r in rows], int(info["seed"]))
    test_rows = [rows[i] for i in parts["test"]]
    ood_rows = load_rows(OOD)
    embed = embed_fn(local_encoder())
    test, _ = evaluate(model, test_rows, embed)
    ood, kinds = evaluate(model, ood_rows, embed)
    cost = own_cost(model, [r["text"] for r in test_rows + ood_rows])
    sizes = {"test": {"rows": len(test_rows), "injections": sum(r["label"] for r in test_rows)},
             "ood": {"rows": len(ood_rows), "injections": sum(r["label"] for r in ood_rows)}}
    result = {"sizes": sizes, "thresholds": model.thresholds, "test": test, "ood": ood,
              "ood_flagged_by_kind_combined_1pct": kinds, "own_cost": cost, "training": model.meta["training"]}
    for line in table("test", test) + table("ood", ood):
        print(line)
    print("ood flagged by kind (combined, calibrated 1% threshold):")
    for kind, k in kinds.items():
        print(f"  {kind:<24} n={k['n']:<3} flagged {k['flagged']:.2f}")
    print(f"sizes {sizes}; detector's own work per text {cost}")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
