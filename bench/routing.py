"""Complexity routing benchmark: how much of the strong model's quality a router keeps, and at what cost.

    python bench/routing.py --json-out bench/results/routing.json

One real Strata (``strata up -c <tmp config>``) serves four routes: ``router`` (a complexity router
whose cheap tier is SmolLM2-135M and strong tier Gemma 3 270M, both llama.cpp), ``cheap`` (SmolLM2
only), ``strong`` (Gemma only) and ``minilm`` (embeddings, for the scorer's nearest-neighbour feature).
Every prompt of ``bench/data/routing_eval.jsonl`` goes through ``strong``, ``cheap`` and ``router`` at
temperature 0; each answer is checked against the item's expected patterns. Random routing with the
router's cheap share is simulated from the all-cheap and all-strong answers (1,000 seeded draws), so
it costs no model calls. Costs are the ledger's ``cost_usd`` (token prices below, no busy-hour price).

The router's threshold is chosen before any eval prompt is sent: a short calibration Strata (embeddings
only) scores every labelled example of ``bench/data/complexity_examples.jsonl`` leave-one-out with the
product's own ``TransparentScorer``, and the threshold that labels them best is used (``--threshold``
skips this). A threshold sweep over the eval set's recorded scores is reported too; it is optimistic,
since it is tuned on the very items it is judged on.

The bundled Gemma 3 270M is a base (pretrained, not instruction-tuned) model without a chat template,
so chat requests to it come back as ChatML echoes. Every request is therefore a plain completion,
``Q: <question>\\nA:``, with stop sequences, for both models alike.

An eval item is ``{"id", "difficulty": "easy"|"hard", "prompt", "expect": [[regex, ...], ...]}``: the answer
is right when every group has an alternative that matches it (case-insensitive).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from strata.config.settings import ComplexityConfig, LabelledExample
from strata.routing.complexity import TransparentScorer

BENCH = Path(__file__).resolve().parent
KEY = "sk-bench-admin-0123456789abcdef"
ARMS = ("strong", "cheap", "router")
PRICES = {"cheap": (0.05, 0.10), "strong": (0.50, 1.00)}  # USD per million input / output tokens
STOP = ["\nQ:", "\nA:", "\nB:", "\n\n"]  # SmolLM2 tends to go on with made-up options "B: ..."
TIER_DEPLOYMENT = {"cheap": "router-smollm2", "strong": "router-gemma3"}

MINILM = """\
  - name: minilm
    deployments:
      - name: minilm-local
        engine: {type: sentence-transformers, threads: 1}
"""


def llm(name: str, model: str, tier: str, extra: str = "") -> str:
    inp, out = PRICES[tier]
    return (f"      - name: {name}\n{extra}"
            f"        engine: {{type: llamacpp, model: \"bundled:{model}\", threads: 1, n_parallel: 2, n_ctx: 2048}}\n"
            f"        price: {{input_per_mtok: {inp}, output_per_mtok: {out}}}\n")


def config(threshold: float, examples: Path) -> str:
    return (
        "routes:\n"
        "  - name: router\n"
        "    complexity:\n"
        f"      threshold: {threshold}\n"
        "      embeddings_route: minilm\n"
        f"      examples_file: {examples}\n"
        "    deployments:\n"
        + llm("router-smollm2", "smollm2", "cheap", "        tier: cheap\n")
        + llm("router-gemma3", "gemma3-270m", "strong", "        tier: strong\n")
        + "  - name: cheap\n    deployments:\n" + llm("cheap-smollm2", "smollm2", "cheap")
        + "  - name: strong\n    deployments:\n" + llm("strong-gemma3", "gemma3-270m", "strong")
        + MINILM
    )


def start_strata(data_dir: Path, port: int, cfg: str) -> subprocess.Popen[bytes]:
    path = data_dir / "strata.yaml"
    path.write_text(cfg)
    exe = Path(sys.executable).with_name("strata")
    log = (data_dir / "strata.log").open("wb")
    return subprocess.Popen(
        [str(exe), "up", "-c", str(path), "--port", str(port), "--data-dir", str(data_dir)],
        env={**os.environ, "STRATA_ADMIN_KEY": KEY}, stdout=log, stderr=subprocess.STDOUT)


def stop_strata(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


async def wait_ready(base: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(base + "/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.25)
    raise TimeoutError("strata did not become ready")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def wrap(question: str) -> str:
    return f"Q: {question}\nA:"


def correct(answer: str, expect: list[list[str]]) -> bool:
    """Every group of accepted patterns must match somewhere in the answer (case-insensitive)."""
    return all(any(re.search(p, answer, re.I | re.M) for p in group) for group in expect)


# -- calibration: the threshold, from the labelled examples only ---------------------------------------

def http_embedder(session: aiohttp.ClientSession, base: str) -> Any:
    cache: dict[str, list[float]] = {}

    async def embed(texts: list[str]) -> list[list[float]]:
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            body = {"model": "minilm", "input": missing}
            async with session.post(base + "/v1/embeddings", json=body,
                                    headers={"Authorization": f"Bearer {KEY}"}) as r:
                r.raise_for_status()
                data = sorted((await r.json())["data"], key=lambda d: d["index"])
            cache.update({t: d["embedding"] for t, d in zip(missing, data, strict=True)})
        return [cache[t] for t in texts]

    return embed


async def loo_scores(base: str, examples: list[LabelledExample]) -> list[float]:
    """Each example scored by the product's scorer with every other example as its neighbours."""
    async with aiohttp.ClientSession() as session:
        embed = http_embedder(session, base)
        scores = []
        for i, ex in enumerate(examples):
            cfg = ComplexityConfig(examples=examples[:i] + examples[i + 1:])
            scores.append((await TransparentScorer(cfg, embed).score({"prompt": wrap(ex.text)})).value)
        return scores


def best_threshold(scores: list[float], hard: list[bool], default: float = 0.5) -> tuple[float, float]:
    """The cut (midpoint between neighbouring scores) labelling most items right; ties: nearest the default."""
    pts = sorted(set(scores))
    cuts = [(a + b) / 2 for a, b in zip(pts, pts[1:], strict=False)] or [default]

    def acc(t: float) -> float:
        return sum((s >= t) == h for s, h in zip(scores, hard, strict=True)) / len(scores)

    best = max(acc(t) for t in cuts)
    return round(min((t for t in cuts if acc(t) == best), key=lambda t: abs(t - default)), 4), best


async def calibrate(port: int, examples: list[LabelledExample]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_strata(Path(tmp), port, "routes:\n" + MINILM)
        try:
            await wait_ready(f"http://127.0.0.1:{port}")
            scores = await loo_scores(f"http://127.0.0.1:{port}", examples)
        finally:
            stop_strata(proc)
    threshold, acc = best_threshold(scores, [e.hard for e in examples])
    return {"threshold": threshold, "example_accuracy": acc, "scores": scores}


# -- the measured run ----------------------------------------------------------------------------------

async def ask(session: aiohttp.ClientSession, base: str, arm: str, item: dict[str, Any], args: argparse.Namespace,
              tag: str) -> dict[str, Any]:
    body = {"model": arm, "prompt": wrap(item["prompt"]), "max_tokens": args.max_tokens, "temperature": 0,
            "stop": STOP}
    rid = f"rt-{tag}-{arm}-{item['id']}"
    headers = {"Authorization": f"Bearer {KEY}", "X-Request-Id": rid}
    async with session.post(base + "/v1/completions", json=body, headers=headers) as r:
        data = await r.json()
    text = data["choices"][0]["text"] if r.status == 200 else ""
    return {"arm": arm, "id": item["id"], "request_id": rid, "status": r.status, "answer": text,
            "correct": correct(text, item["expect"])}


async def run_arms(base: str, items: list[dict[str, Any]], args: argparse.Namespace, tag: str) -> list[dict[str, Any]]:
    jobs = [(arm, item) for item in items for arm in ARMS]
    results: list[dict[str, Any]] = []
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker() -> None:
            while jobs:
                arm, item = jobs.pop(0)
                results.append(await ask(session, base, arm, item, args, tag))

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return results


def ledger_rows(db: Path, tag: str) -> dict[str, dict[str, Any]]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        rows = con.execute("SELECT request_id, route, deployment, tier, route_score, cost_usd, prompt_tokens, "
                           "completion_tokens, status FROM ledger WHERE request_id LIKE ?", (f"rt-{tag}-%",))
        return {r["request_id"]: dict(r) for r in rows}
    finally:
        con.close()


async def measure(port: int, threshold: float, items: list[dict[str, Any]], examples: list[LabelledExample],
                  args: argparse.Namespace) -> tuple[list[dict[str, Any]], float]:
    tag = time.strftime("%H%M%S")
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_strata(Path(tmp), port, config(threshold, args.examples.resolve()))
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_ready(base)
            results = await run_arms(base, items, args, tag)
            overlap = await neighbour_overlap(base, items, examples)
        finally:
            stop_strata(proc)  # the ledger is flushed on shutdown
        ledger = ledger_rows(Path(tmp) / "strata.db", tag)
    for r in results:
        row = ledger[r["request_id"]]
        r.update(deployment=row["deployment"], tier=row["tier"], score=row["route_score"], cost=row["cost_usd"],
                 prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"])
    return results, overlap


# -- analysis ------------------------------------------------------------------------------------------

def per_item(results: list[dict[str, Any]], items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(r["arm"], r["id"]): r for r in results}
    out = []
    for it in items:
        s, c, rt = (by[(a, it["id"])] for a in ARMS)
        out.append({"id": it["id"], "difficulty": it["difficulty"], "score": rt["score"], "tier": rt["tier"],
                    "router_deployment": rt["deployment"], "strong_ok": s["correct"], "cheap_ok": c["correct"],
                    "router_ok": rt["correct"], "strong_cost": s["cost"], "cheap_cost": c["cost"],
                    "router_cost": rt["cost"], "strong_answer": s["answer"], "cheap_answer": c["answer"],
                    "router_answer": rt["answer"],
                    "router_same_as_tier_arm": rt["answer"] == (s if rt["tier"] == "strong" else c)["answer"]})
    return out


def row(name: str, cheap_share: float, cost: float, quality: float, base_cost: float, base_q: float
        ) -> dict[str, Any]:
    return {"policy": name, "cheap_share": cheap_share, "cost_usd": cost, "saving": 1 - cost / base_cost,
            "quality": quality, "quality_kept": quality / base_q if base_q else float("nan")}


def random_policy(rows: list[dict[str, Any]], n_cheap: int, draws: int) -> dict[str, Any]:
    costs, quals = [], []
    for seed in range(draws):
        cheap = set(random.Random(seed).sample(range(len(rows)), n_cheap))
        costs.append(sum(r["cheap_cost"] if i in cheap else r["strong_cost"] for i, r in enumerate(rows)))
        quals.append(sum(r["cheap_ok"] if i in cheap else r["strong_ok"] for i, r in enumerate(rows)) / len(rows))
    qs = sorted(quals)
    return {"cost": statistics.mean(costs), "quality": statistics.mean(quals),
            "quality_p5": qs[int(0.05 * draws)], "quality_p95": qs[int(0.95 * draws) - 1]}


def oracle(rows: list[dict[str, Any]], base_cost: float, base_q: float) -> dict[str, Any]:
    """Upper bound, not a policy: cheap whenever the cheap answer is right or both are wrong."""
    cheap = [r["cheap_ok"] or not r["strong_ok"] for r in rows]
    cost = sum(r["cheap_cost"] if c else r["strong_cost"] for r, c in zip(rows, cheap, strict=True))
    q = sum(r["cheap_ok"] or r["strong_ok"] for r in rows) / len(rows)
    return row("oracle (upper bound)", sum(cheap) / len(rows), cost, q, base_cost, base_q)


def simulate(rows: list[dict[str, Any]], t: float, base_cost: float, base_q: float) -> dict[str, Any]:
    """What the router would have done at threshold ``t``, from its recorded scores and both arms' answers."""
    cheap = [r["score"] < t for r in rows]
    n = len(rows)
    cost = sum(r["cheap_cost"] if c else r["strong_cost"] for r, c in zip(rows, cheap, strict=True))
    q = sum(r["cheap_ok"] if c else r["strong_ok"] for r, c in zip(rows, cheap, strict=True)) / n
    labels = sum((not c) == (r["difficulty"] == "hard") for r, c in zip(rows, cheap, strict=True)) / n
    return {"threshold": t, **row("router (simulated)", sum(cheap) / n, cost, q, base_cost, base_q),
            "label_accuracy": labels}


def analyse(rows: list[dict[str, Any]], threshold: float, draws: int) -> dict[str, Any]:
    n = len(rows)
    strong_cost = sum(r["strong_cost"] for r in rows)
    strong_q = sum(r["strong_ok"] for r in rows) / n
    n_cheap = sum(r["tier"] == "cheap" for r in rows)
    rnd = random_policy(rows, n_cheap, draws)
    table = [
        row("all-strong", 0.0, strong_cost, strong_q, strong_cost, strong_q),
        row("all-cheap", 1.0, sum(r["cheap_cost"] for r in rows), sum(r["cheap_ok"] for r in rows) / n,
            strong_cost, strong_q),
        row("router", n_cheap / n, sum(r["router_cost"] for r in rows), sum(r["router_ok"] for r in rows) / n,
            strong_cost, strong_q),
        {**row("random (same cheap share)", n_cheap / n, rnd["cost"], rnd["quality"], strong_cost, strong_q),
         "quality_p5": rnd["quality_p5"], "quality_p95": rnd["quality_p95"]},
        oracle(rows, strong_cost, strong_q),
    ]
    confusion = {f"{d}->{t}": sum(r["difficulty"] == d and r["tier"] == t for r in rows)
                 for d in ("easy", "hard") for t in ("cheap", "strong")}
    by_difficulty = {d: {arm: sum(r[f"{arm}_ok"] for r in rows if r["difficulty"] == d) for arm in ARMS}
                     | {"items": sum(r["difficulty"] == d for r in rows)} for d in ("easy", "hard")}
    sweep = [simulate(rows, round(t, 2), strong_cost, strong_q) for t in [x / 20 for x in range(2, 15)]]
    return {"threshold": threshold, "table": table,
            "label_accuracy": sum((r["tier"] == "strong") == (r["difficulty"] == "hard") for r in rows) / n,
            "confusion": confusion, "correct_by_difficulty": by_difficulty, "sweep_on_eval_set": sweep,
            "router_answers_equal_tier_arm": sum(r["router_same_as_tier_arm"] for r in rows),
            "served_by_tier_deployment": sum(r["router_deployment"] == TIER_DEPLOYMENT[r["tier"]] for r in rows)}


async def neighbour_overlap(base: str, items: list[dict[str, Any]], examples: list[LabelledExample]) -> float:
    """Highest cosine similarity between any eval prompt and any labelled example (a leakage check)."""
    async with aiohttp.ClientSession() as session:
        embed = http_embedder(session, base)
        a, b = await embed([i["prompt"] for i in items]), await embed([e.text for e in examples])

    def unit(v: list[float]) -> list[float]:
        n = sum(x * x for x in v) ** 0.5 or 1.0
        return [x / n for x in v]

    ua, ub = [unit(v) for v in a], [unit(v) for v in b]
    return max(sum(x * y for x, y in zip(u, w, strict=True)) for u in ua for w in ub)


def print_report(res: dict[str, Any]) -> None:
    a = res["analysis"]
    print(f"\nthreshold {a['threshold']} ({res['threshold_source']}); scorer labels eval difficulty right "
          f"{a['label_accuracy']:.1%} {a['confusion']}")
    print("\n| policy | cheap share | cost (USD) | saving vs all-strong | quality | quality kept |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in a["table"]:
        print(f"| {r['policy']} | {r['cheap_share']:.1%} | {r['cost_usd']:.6f} | {r['saving']:.1%} | "
              f"{r['quality']:.1%} | {r['quality_kept']:.1%} |")
    print("\n| threshold | cheap share | saving | quality | quality kept | label accuracy |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in a["sweep_on_eval_set"]:
        print(f"| {r['threshold']:.2f} | {r['cheap_share']:.1%} | {r['saving']:.1%} | {r['quality']:.1%} | "
              f"{r['quality_kept']:.1%} | {r['label_accuracy']:.1%} |")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    items = read_jsonl(args.eval)
    examples = [LabelledExample.model_validate(e) for e in read_jsonl(args.examples)]
    t0 = time.monotonic()
    if args.threshold is None:
        cal = await calibrate(args.port, examples)
        threshold, source = cal["threshold"], "chosen leave-one-out on the labelled examples"
    else:
        cal, threshold, source = None, args.threshold, "--threshold"
    print(f"threshold {threshold} ({source})", flush=True)
    results, overlap = await measure(args.port, threshold, items, examples, args)
    rows = per_item(results, items)
    return {"threshold_source": source, "calibration": cal, "max_similarity_eval_to_examples": overlap,
            "items": len(items), "examples": len(examples), "prices_usd_per_mtok": PRICES,
            "prompt_format": wrap("<question>"), "stop": STOP,
            "max_tokens": args.max_tokens, "concurrency": args.concurrency, "random_draws": args.draws,
            "errors": sum(r["status"] != 200 for r in results), "analysis": analyse(rows, threshold, args.draws),
            "per_item": rows, "wall_s": time.monotonic() - t0,
            "machine": {"cpus": os.cpu_count(), "load_at_end": os.getloadavg()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eval", type=Path, default=BENCH / "data" / "routing_eval.jsonl")
    p.add_argument("--examples", type=Path, default=BENCH / "data" / "complexity_examples.jsonl")
    p.add_argument("--threshold", type=float, help="skip calibration and use this threshold")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--draws", type=int, default=1000, help="seeded draws of the random policy")
    p.add_argument("--port", type=int, default=18310)
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    res = asyncio.run(run(args))
    print_report(res)
    print(f"\n{res['items']} items, {res['errors']} errors, {res['wall_s']:.0f} s")
    if args.json_out:
        args.json_out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
