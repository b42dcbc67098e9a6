"""Why the upstream client is aiohttp: CPU per proxied request, httpx vs aiohttp, same upstream.

Starts bench/fixed_upstream.py, sends N chat requests at concurrency 16 with each client, and reports
requests per CPU-second of this process (the gateway pays exactly this cost per upstream call).

    python bench/http_clients.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx
import orjson
import uvloop

BODY = orjson.dumps({"model": "fixed", "messages": [{"role": "user", "content": "hi"}]})
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer x"}


async def with_aiohttp(url: str, n: int) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as s:

        async def one() -> None:
            async with s.post(url, data=BODY, headers=HEADERS) as r:
                orjson.loads(await r.read())

        await _drive(one, n)


async def with_httpx(url: str, n: int) -> None:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as c:

        async def one() -> None:
            r = await c.post(url, content=BODY, headers=HEADERS)
            orjson.loads(r.content)

        await _drive(one, n)


async def _drive(one, n: int) -> None:  # type: ignore[no-untyped-def]
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one()

    await asyncio.gather(*(worker() for _ in range(16)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--port", type=int, default=18600)
    args = p.parse_args()
    up = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("fixed_upstream.py")), "--port", str(args.port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1)
        url = f"http://127.0.0.1:{args.port}/v1/chat/completions"
        print("| client | requests | CPU s | requests per CPU-second |\n|---|---:|---:|---:|")
        for name, fn in (("aiohttp", with_aiohttp), ("httpx", with_httpx)):
            uvloop.run(fn(url, 500))  # warm-up
            cpu = time.process_time()
            uvloop.run(fn(url, args.requests))
            used = time.process_time() - cpu
            print(f"| {name} {_version(name)} | {args.requests} | {used:.2f} | {args.requests / used:,.0f} |")
    finally:
        up.terminate()
        up.wait(10)


def _version(name: str) -> str:
    return str(__import__(name).__version__)


if __name__ == "__main__":
    main()
