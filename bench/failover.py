"""Failover: one of two deployments is killed mid-load; how many client requests fail, and how fast is
the dead one ejected?

Two fixed-reply upstreams (bench/fixed_upstream.py) behind one route; a closed-loop load of
non-streaming chat requests at concurrency 16; after ``--kill-at`` seconds upstream B is SIGKILLed.
Requests that hit B before its ejection are retried on A before any byte reaches the client.

    python bench/failover.py [--duration 10] [--kill-at 3] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from gateways import STRATA_KEY as KEY
from gateways import spawn, wait_ready

BENCH = Path(__file__).resolve().parent
CONFIG = """\
routes:
  - name: fixed
    breaker: {{consecutive_failures: 3, cooldown: 30}}
    deployments:
      - name: fixed-a
        engine: {{type: openai, base_url: "http://127.0.0.1:{a}/v1", model: fixed, connect_timeout: 1}}
      - name: fixed-b
        engine: {{type: openai, base_url: "http://127.0.0.1:{b}/v1", model: fixed, connect_timeout: 1}}
"""


async def load(base: str, duration: float, stats: dict[str, int]) -> None:
    body = {"model": "fixed", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {KEY}"}
    end = time.monotonic() + duration
    async with aiohttp.ClientSession() as s:
        async def worker() -> None:
            while time.monotonic() < end:
                try:
                    async with s.post(base + "/v1/chat/completions", json=body, headers=headers) as r:
                        await r.read()
                        stats["ok" if r.status == 200 else "failed"] += 1
                except aiohttp.ClientError:
                    stats["failed"] += 1
        await asyncio.gather(*(worker() for _ in range(16)))


async def ejection_time(base: str, killed_at: float) -> float | None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as s:
        while time.monotonic() - killed_at < 30:
            async with s.get(base + "/admin/engines") as r:
                if (await r.json())["fixed-b"]["breaker"] == "open":
                    return time.monotonic() - killed_at
            await asyncio.sleep(0.01)
    return None


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, float | int | None]:
    ports = {"a": 18701, "b": 18702}
    ups = {k: spawn([sys.executable, str(BENCH / "fixed_upstream.py"), "--port", str(p)]) for k, p in ports.items()}
    (tmp / "strata.yaml").write_text(CONFIG.format(**ports))
    strata = spawn([str(Path(sys.executable).with_name("strata")), "up", "--config", str(tmp / "strata.yaml"),
                    "--port", "18700", "--data-dir", str(tmp / "data")], env={**os.environ, "STRATA_ADMIN_KEY": KEY})
    base = "http://127.0.0.1:18700"
    try:
        await asyncio.to_thread(wait_ready, base + "/readyz", 60, strata)
        stats = {"ok": 0, "failed": 0}
        loader = asyncio.create_task(load(base, args.duration, stats))
        await asyncio.sleep(args.kill_at)
        ups["b"].send_signal(signal.SIGKILL)
        eject = await ejection_time(base, time.monotonic())
        await loader
        total = stats["ok"] + stats["failed"]
        return {"requests": total, "failed": stats["failed"], "failed_share": stats["failed"] / max(total, 1),
                "ejection_s": eject}
    finally:
        for p in (strata, *ups.values()):
            p.send_signal(signal.SIGTERM)
            p.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--kill-at", type=float, default=3)
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    ej = result["ejection_s"]
    print("| requests | failed | failed share | time to eject the killed deployment |\n|---:|---:|---:|---:|")
    print(f"| {result['requests']} | {result['failed']} | {result['failed_share']:.4%} | "
          f"{'not ejected' if ej is None else f'{ej * 1000:.0f} ms'} |")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
