"""Cold start: from launching ``strata up`` (fresh data dir, zero config) to the first generated token.

The client starts polling immediately: connection refused until the gateway listens, then the request
waits for the llama.cpp worker and streams; the clock stops at the first content delta.

    python bench/cold_start.py [--runs 3] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

KEY = "sk-bench-admin-0123456789abcdef"


def first_token(url: str, deadline: float) -> None:
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "stream": True}
    while time.monotonic() < deadline:
        try:
            with httpx.stream("POST", url, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as r:
                if r.status_code != 200:
                    time.sleep(0.05)
                    continue
                for line in r.iter_lines():
                    if line.startswith("data: {") and '"content":"' in line:
                        return
        except httpx.TransportError:
            time.sleep(0.02)
    raise TimeoutError("no token before the deadline")


def once(port: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(sys.executable).with_name("strata")
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [str(exe), "up", "--port", str(port), "--data-dir", tmp],
            env={**os.environ, "STRATA_ADMIN_KEY": KEY},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            first_token(f"http://127.0.0.1:{port}/v1/chat/completions", t0 + 120)
            return time.monotonic() - t0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    times = []
    for i in range(args.runs):
        times.append(once(18400 + i))
        print(f"run {i + 1}: {times[-1]:.2f} s to first token", flush=True)
    result = {"runs_s": times, "median_s": statistics.median(times)}
    print(
        f"\n| runs | median | min | max |\n|---:|---:|---:|---:|\n| {args.runs} | {result['median_s']:.2f} s | "
        f"{min(times):.2f} s | {max(times):.2f} s |"
    )
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
