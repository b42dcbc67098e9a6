"""What online quality sampling costs a client: one Strata process, four routes on the same fixed upstream,
requests sent one at a time, interleaved across the routes (so every route sees the same machine load):

- ``plain``: no ``quality:`` block (the stage's one attribute check);
- ``heuristics``: every answer sampled (``sample_rate: 1``) and scored by refusal, empty and json;
- ``judged``: every answer sampled and judged by a route on the same fixed upstream (its reply is not a
  score, so each sample ends ``failed``: the judge's round trip and bookkeeping are what is measured);
- ``stalled``: every answer sampled, the judge a server that never answers (``max_concurrency: 4``: four
  samples hang, the rest are dropped as ``skipped_busy``).

    python bench/quality.py --requests 300 --json-out bench/results/quality.json

Prints client latency (p50, p90, p99, ms) per route and the ``strata_quality_samples_total`` outcomes.
Stdlib only (plus the bench helpers); the gateway runs from the working tree's installed ``strata``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from gateways import CHAT_PATH, HOST, STRATA_KEY, fixed_upstream, free_port, strata_target

ROUTES = ("plain", "heuristics", "judged", "stalled")
ENGINE = '{{{{type: openai, base_url: "http://127.0.0.1:{port}/v1", model: fixed}}}}'


def route(name: str, port: str, quality: str = "") -> str:
    out = f"  - name: {name}\n    retries: 0\n"
    if quality:
        out += f"    quality: {{{{{quality}}}}}\n"
    return out + f"    deployments:\n      - name: {name}-dep\n        engine: {ENGINE.format(port=port)}\n"


def config(stall_port: int) -> str:
    up = "{upstream_port}"
    return "routes:\n" + "".join([
        route("plain", up),
        route("fixed", up),  # the one the bench helpers check the gateway with
        route("heuristics", up, "sample_rate: 1, scorers: [refusal, empty, json]"),
        route("judged", up, "sample_rate: 1, max_concurrency: 4, scorers: [judge], judge: {{route: judge}}"),
        route("stalled", up, "sample_rate: 1, max_concurrency: 4, timeout: 3600, scorers: [judge], "
              "judge: {{route: stalljudge}}"),
        route("judge", up),
        route("stalljudge", str(stall_port)),
    ])


class Stall(BaseHTTPRequestHandler):
    """An upstream that takes the request and never answers (until the bench ends)."""

    def do_POST(self) -> None:  # noqa: N802
        time.sleep(3600)

    def do_GET(self) -> None:  # noqa: N802  (/v1/models health probes answer)
        body = b'{"object": "list", "data": [{"id": "fixed", "object": "model"}]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def chat(base_url: str, model: str) -> float:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = urllib.request.Request(base_url + CHAT_PATH, data=body, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {STRATA_KEY}"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as resp:
        resp.read()
    return time.perf_counter() - t0


def samples(base_url: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("strata_quality_samples_total{"):
                labels = dict(p.split("=", 1) for p in line[line.index("{") + 1:line.index("}")].split(","))
                route_name, outcome = labels["route"].strip('"'), labels["outcome"].strip('"')
                out.setdefault(route_name, {})[outcome] = float(line.rsplit(" ", 1)[1])
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300, help="per route")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    args.strata_cmd = None
    stall = ThreadingHTTPServer((HOST, free_port()), Stall)
    stall.daemon_threads = True
    threading.Thread(target=stall.serve_forever, daemon=True).start()
    times: dict[str, list[float]] = {r: [] for r in ROUTES}
    load = {"start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="strata-quality-") as t, fixed_upstream(Path(t)) as up_port, \
            strata_target(args, Path(t), up_port, "quality", config(stall.server_address[1])) as target:
        for r in ROUTES:  # warm-up: a first request per route
            chat(target.base_url, r)
        for i in range(args.requests):
            for r in ROUTES if i % 2 == 0 else reversed(ROUTES):
                times[r].append(chat(target.base_url, r))
        time.sleep(1.0)  # let the last samples finish scoring
        outcomes = samples(target.base_url)
    load["end"] = os.getloadavg()
    stall.shutdown()
    rows = {r: {"n": len(v), "p50_ms": pct(v, 0.5), "p90_ms": pct(v, 0.9), "p99_ms": pct(v, 0.99),
                "mean_ms": statistics.fmean(v) * 1000, "samples": outcomes.get(r, {})} for r, v in times.items()}
    print("\n| route | n | p50 ms | p90 ms | p99 ms | mean ms | samples (scored / failed / skipped_busy) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r, row in rows.items():
        s = row["samples"]
        counts = " / ".join(f"{s.get(o, 0):g}" for o in ("scored", "failed", "skipped_busy")) if s else "-"
        print(f"| {r} | {row['n']} | {row['p50_ms']:.2f} | {row['p90_ms']:.2f} | {row['p99_ms']:.2f} | "
              f"{row['mean_ms']:.2f} | {counts} |")
    print(f"\nload average {load['start'][0]:.1f} -> {load['end'][0]:.1f}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"rows": rows, "load_avg": load, "requests": args.requests}, indent=2))


if __name__ == "__main__":
    main()
