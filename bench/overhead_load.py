"""The load and the measurements of bench/gateway_overhead.py: wrk against a target at each concurrency
level, and per run its RPS and latency, and the gateway's RSS and CPU time per request (from /proc, over the
gateway's whole process tree). Stdlib only.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateways import BENCH, CHAT_PATH, Target

LEVELS = ((1, 1), (2, 16))  # (wrk threads, connections)
WARMUP_S = 2
WARMUP_CAP_S = 120  # Target.warmup_requests: stop warming up after this long even if fewer were served


@dataclass
class Row:
    target: str
    concurrency: int
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    rss_mb: float | None = None  # VmRSS summed over the gateway's process tree
    procs: int | None = None  # processes in that tree
    cpu_us: float | None = None  # CPU time (user + system) of that tree per request, in microseconds
    errors: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    failure: str | None = None
    round: int = 0  # --rounds: which round (targets run interleaved, round by round)


# ---------------------------------------------------------------- process tree


def tree_pids(root: int) -> list[int]:
    """root plus all its descendants, from /proc/*/stat parent ids."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(parents.get(pid, []))
    return pids


def cpu_s(root: int) -> float:
    """User + system CPU seconds used so far by the process tree rooted at root."""
    ticks = 0
    for pid in tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(root: int) -> float | None:
    """VmRSS summed over the process tree rooted at root (MiB)."""
    total_kb, seen = 0, False
    for pid in tree_pids(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
                    seen = True
        except OSError:
            continue
    return round(total_kb / 1024, 1) if seen else None


# ---------------------------------------------------------------- wrk


def run_wrk(target: Target, threads: int, conns: int, duration_s: int) -> dict[str, Any]:
    cmd = [
        "wrk", f"-t{threads}", f"-c{conns}", f"-d{duration_s}s", "--timeout", "10s",
        "-s", str(BENCH / "wrk_post.lua"), target.base_url + CHAT_PATH, "--", "fixed", target.key,
        *(f"{name}: {value}" for name, value in target.headers.items()),
    ]  # fmt: skip
    env = {**os.environ, "WRK_BODY_FILE": str(target.body_file or "")}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 30, check=False, env=env)
    for line in out.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            return dict(json.loads(line[len("WRK_JSON ") :]))
    raise RuntimeError(f"wrk gave no result (rc={out.returncode}): {out.stderr.strip()[:300]}")


def warm_up(target: Target) -> int:
    """Load target at the top level until it has served ``target.warmup_requests`` (or WARMUP_CAP_S
    passed); returns how many it served."""
    served, deadline = 0, time.monotonic() + WARMUP_CAP_S
    threads, conns = LEVELS[-1]
    while served < target.warmup_requests and time.monotonic() < deadline:
        served += int(run_wrk(target, threads, conns, WARMUP_S)["requests"])
    if target.warmup_requests:
        print(f"  {target.name}: warmed up with {served} requests", flush=True)
    return served


def measure(target: Target, duration_s: int) -> list[Row]:
    warm_up(target)
    rows = []
    for threads, conns in LEVELS:
        run_wrk(target, threads, conns, WARMUP_S)
        cpu_before = cpu_s(target.proc.pid) if target.proc is not None else 0.0
        res = run_wrk(target, threads, conns, duration_s)
        rows.append(result_row(target, conns, res, cpu_before))
    return rows


def measure_together(targets: list[Target], duration_s: int) -> list[Row]:
    """Load every target at once, each with its own wrk: they share the machine's noise, so their ratios
    hold on a busy machine where back-to-back runs drift."""
    rows = []
    with ThreadPoolExecutor(len(targets)) as pool:
        for threads, conns in LEVELS:
            n = len(targets)
            list(pool.map(run_wrk, targets, [threads] * n, [conns] * n, [WARMUP_S] * n))
            before = [cpu_s(t.proc.pid) if t.proc is not None else 0.0 for t in targets]
            results = list(pool.map(run_wrk, targets, [threads] * n, [conns] * n, [duration_s] * n))
            rows += [result_row(t, conns, res, cpu) for t, res, cpu in zip(targets, results, before, strict=True)]
    return rows


def result_row(target: Target, conns: int, res: dict[str, Any], cpu_before: float) -> Row:
    """One wrk result as a row: RPS and latency, and the gateway's RSS and CPU per request."""
    if target.proc is not None and target.proc.poll() is not None:
        raise RuntimeError(f"{target.name} exited (rc={target.proc.returncode}) during the c={conns} run")
    row = Row(target.name, conns, res["rps"], res["p50_ms"], res["p99_ms"], requests=res["requests"])
    row.errors = {k: v for k, v in res["errors"].items() if v}
    if target.proc is not None:
        row.rss_mb = rss_mb(target.proc.pid)
        row.procs = len(tree_pids(target.proc.pid))
        if res["requests"]:
            row.cpu_us = round((cpu_s(target.proc.pid) - cpu_before) / res["requests"] * 1e6, 1)
    print(f"  {target.name} c={conns}: {row.rps:.0f} rps p50={row.p50_ms:.3f}ms "
          f"p99={row.p99_ms:.3f}ms rss={row.rss_mb} cpu/req={row.cpu_us}us errors={row.errors}",
          flush=True)  # fmt: skip
    return row
