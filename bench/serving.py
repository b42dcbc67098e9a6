"""Serving benchmark: aggregate output tokens/s through Strata vs the llama.cpp engine directly.

Both paths hit the very same llama.cpp worker (the one Strata supervises; its URL comes from
``/admin/engines``), interleaved per concurrency level, so the ratio isolates the gateway's cost.
Every request streams exactly ``--max-tokens`` tokens (``ignore_eos``), like a chat client would.

    python bench/serving.py [--levels 1,4,8] [--max-tokens 128] [--rounds 2] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

KEY = "sk-bench-admin-0123456789abcdef"
PROMPT = "Write a long story about a lighthouse keeper and the sea."


async def one(session: aiohttp.ClientSession, url: str, model: str, max_tokens: int) -> int:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        "temperature": 0.7,
    }
    tokens = 0
    async with session.post(url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
        r.raise_for_status()
        async for line in r.content:
            if line.startswith(b"data: {") and b'"usage"' in line:
                usage = json.loads(line[6:]).get("usage")
                if usage:
                    tokens = usage["completion_tokens"]
    return tokens


async def level(url: str, model: str, concurrency: int, requests: int, max_tokens: int) -> float:
    """Tokens/s with ``concurrency`` streams kept busy until ``requests`` have finished."""
    queue = list(range(requests))
    total = 0
    # llama.cpp closes the connection after each stream, so neither path reuses connections (same for both)
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:

        async def worker() -> None:
            nonlocal total
            while queue:
                queue.pop()
                tokens = await one(session, url, model, max_tokens)  # not `total += await`: that loses updates
                total += tokens

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - t0)


def start_strata(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    cfg = data_dir / "strata.yaml"
    cfg.write_text(
        "routes:\n  - name: smollm2\n    deployments:\n      - name: smollm2-local\n"
        "        engine: {type: llamacpp, n_parallel: 8, n_ctx: 8192}\n"
    )
    exe = Path(sys.executable).with_name("strata")
    env = {**os.environ, "STRATA_ADMIN_KEY": KEY}
    return subprocess.Popen(
        [str(exe), "up", "--config", str(cfg), "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_ready(base: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(base + "/readyz") as r:
                    if r.status == 200:
                        async with s.get(base + "/admin/engines", headers={"Authorization": f"Bearer {KEY}"}) as e:
                            return str((await e.json())["smollm2-local"]["url"])
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError("strata did not become ready")


async def run(args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    port = 18300
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_strata(Path(tmp), port)
        try:
            gateway = f"http://127.0.0.1:{port}/v1"
            direct = await wait_ready(f"http://127.0.0.1:{port}")
            await level(direct, "smollm2", 2, 2, 16)  # warm-up
            rows = []
            for c in args.levels:
                res: dict[str, list[float]] = {"direct": [], "strata": []}
                for _ in range(args.rounds):
                    for name, url in (("direct", direct), ("strata", gateway)):
                        res[name].append(await level(url, "smollm2", c, max(c * args.per_stream, 8), args.max_tokens))
                d, s = sum(res["direct"]) / args.rounds, sum(res["strata"]) / args.rounds
                rows.append({"concurrency": c, "direct_tok_s": d, "strata_tok_s": s, "ratio": s / d})
                print(f"c={c}: direct {d:.1f} tok/s, strata {s:.1f} tok/s, ratio {s / d:.3f}", flush=True)
            return {"rows": rows}
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", default="1,4,8", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--per-stream", type=int, default=4, help="requests per stream per measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    result = asyncio.run(run(args))
    print("\n| concurrency | direct llama.cpp (tok/s) | through Strata (tok/s) | Strata / direct |")
    print("|---:|---:|---:|---:|")
    for r in result["rows"]:
        print(f"| {r['concurrency']} | {r['direct_tok_s']:.1f} | {r['strata_tok_s']:.1f} | {r['ratio']:.1%} |")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
