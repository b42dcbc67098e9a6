"""Ledger after a crash: a gateway is SIGKILLed under load; how many requests its clients saw answered have
no ledger row once it is restarted on the same data dir?

The fixed-reply upstream (bench/fixed_upstream.py) behind one route; a closed-loop load of non-streaming
chat requests at concurrency 16, each with its own X-Request-Id; after ``--kill-at`` seconds the gateway is
SIGKILLed, then started again (which replays its ledger journal) and stopped, and the SQLite ledger is
compared with the ids that got a whole 200 answer. With the journal on (the default) and off, in turn.

    python bench/ledger_crash.py [--kill-at 4] [--rounds 3] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from gateways import STRATA_KEY as KEY
from gateways import fixed_route, spawn, wait_ready

BENCH = Path(__file__).resolve().parent
CONFIG = fixed_route("fixed-upstream", price=False) + "ledger: {{journal: {{enabled: {journal}}}}}\n"
UPSTREAM, GATEWAY = 18711, 18710


async def load(base: str, answered: set[str]) -> None:
    """Until the gateway dies: every id whose whole 200 answer arrived goes in ``answered``."""
    body = {"model": "fixed", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as s:
        async def worker(w: int) -> None:
            for i in range(10**9):
                rid = f"crash-{w}-{i}"
                try:
                    async with s.post(base + "/v1/chat/completions", json=body, headers={"X-Request-Id": rid}) as r:
                        reply = await r.json()
                except (aiohttp.ClientError, ValueError):
                    return
                if r.status == 200 and reply["choices"][0]["message"]["content"]:
                    answered.add(rid)
        await asyncio.gather(*(worker(w) for w in range(16)))


def start(tmp: Path, data: Path) -> subprocess.Popen[bytes]:
    return spawn([str(Path(sys.executable).with_name("strata")), "up", "--config", str(tmp / "strata.yaml"),
                  "--port", str(GATEWAY), "--data-dir", str(data)], env={**os.environ, "STRATA_ADMIN_KEY": KEY})


async def run(tmp: Path, journal: bool, kill_at: float) -> dict[str, Any]:
    (tmp / "strata.yaml").write_text(CONFIG.format(upstream_port=UPSTREAM, journal=str(journal).lower()))
    data, base = tmp / f"data-{journal}", f"http://127.0.0.1:{GATEWAY}"
    gateway = start(tmp, data)
    await asyncio.to_thread(wait_ready, base + "/readyz", 60, gateway)
    answered: set[str] = set()
    loader = asyncio.create_task(load(base, answered))
    await asyncio.sleep(1)
    counted, since = len(answered), time.monotonic()
    await asyncio.sleep(kill_at - 1)
    rps = (len(answered) - counted) / (time.monotonic() - since)
    gateway.send_signal(signal.SIGKILL)
    gateway.wait(30)
    await loader
    restarted = start(tmp, data)  # replays what the killed one journaled
    await asyncio.to_thread(wait_ready, base + "/readyz", 60, restarted)
    restarted.send_signal(signal.SIGTERM)
    restarted.wait(60)
    with sqlite3.connect(data / "strata.db") as db:
        rows = Counter(rid for (rid,) in db.execute("SELECT request_id FROM ledger"))
    return {"journal": journal, "answered_rps": round(rps), "answered": len(answered),
            "missing": len(answered - rows.keys()), "duplicated": sum(1 for n in rows.values() if n > 1)}


async def run_all(kill_at: float, rounds: int) -> list[dict[str, Any]]:
    upstream = spawn([sys.executable, str(BENCH / "fixed_upstream.py"), "--port", str(UPSTREAM)])
    try:
        await asyncio.to_thread(wait_ready, f"http://127.0.0.1:{UPSTREAM}/health", 60, upstream)
        results = []
        for _ in range(rounds):
            for journal in (True, False):
                with tempfile.TemporaryDirectory() as tmp:
                    results.append(await run(Path(tmp), journal, kill_at))
        return results
    finally:
        upstream.send_signal(signal.SIGTERM)
        upstream.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kill-at", type=float, default=4, help="seconds of load before the SIGKILL (at least 2)")
    p.add_argument("--rounds", type=int, default=3, help="kills per setting (where a kill lands varies)")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    results = asyncio.run(run_all(max(args.kill_at, 2), args.rounds))
    print("| journal | answered/s | answered before the kill | without a ledger row | with two rows |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {'on' if r['journal'] else 'off'} | {r['answered_rps']:,} | {r['answered']:,} | "
              f"{r['missing']:,} | {r['duplicated']:,} |")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
