"""Gateway overhead benchmark: Strata vs the LiteLLM proxy and Portkey's gateway over the same fixed upstream.

Why: a gateway's cost is the latency and throughput it adds on top of the model
server. This starts bench/fixed_upstream.py (a reply-from-memory server that is
never the bottleneck), loads it directly with wrk, then through Strata, through
the LiteLLM proxy and through Portkey's open-source gateway, and reports RPS,
p50, p99 and gateway RSS at concurrency 1 and 16.

    python bench/gateway_overhead.py --json-out bench/results.json
    python bench/gateway_overhead.py --skip-litellm --skip-portkey --duration 5
    python bench/gateway_overhead.py --targets strata --duration 2   # Strata, LiteLLM and Portkey, quickly
    python bench/gateway_overhead.py --strata-cmd "strata up --config {config} --port {port} ..."
    python bench/gateway_overhead.py --skip-litellm --targets strata,strata-nojournal --rounds 3

--targets picks the Strata targets to run (default: all); --rounds repeats them, interleaved, in reverse
order every other round, and the summary averages the rounds (on a shared machine, compare targets run
side by side like this).

--strata-cmd placeholders: {config} {host} {port} {data_dir} {upstream_port}.
LiteLLM comes from bench/.venv-litellm (create it with bench/setup_litellm.sh), Portkey from
bench/.portkey (bench/setup_portkey.sh; needs node); --skip-litellm / --skip-portkey leave one out. The
peers run once, after the Strata rounds.
Needs wrk on PATH (apt-get install -y wrk). Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from gateways import (
    EXTRA_TARGETS,
    GATEWAYS,
    GOVERNANCE_TARGETS,
    STRATA_CONFIG,
    STRATA_TARGETS,
    direct_target,
    fixed_upstream,
    litellm_target,
    litellm_version,
    portkey_target,
    portkey_version,
    strata_target,
)
from overhead_load import LEVELS, WARMUP_S, Row, measure, measure_together

# ---------------------------------------------------------------- targets


def bench_strata(args: argparse.Namespace, tmp: Path, up_port: int, name: str = "strata",
                 template: str = STRATA_CONFIG) -> list[Row]:
    with strata_target(args, tmp, up_port, name, template) as target:
        return measure(target, args.duration)


def bench_together(args: argparse.Namespace, tmp: Path, up_port: int, names: list[str]) -> list[Row]:
    with ExitStack() as stack:
        targets = [stack.enter_context(strata_target(args, tmp, up_port, n, STRATA_TARGETS[n])) for n in names]
        return measure_together(targets, args.duration)


def bench_litellm(args: argparse.Namespace, tmp: Path, up_port: int) -> list[Row]:
    with litellm_target(tmp, up_port) as target:
        return measure(target, args.duration)


def bench_portkey(args: argparse.Namespace, tmp: Path, up_port: int) -> list[Row]:
    with portkey_target(tmp, up_port) as target:
        return measure(target, args.duration)


def bench_direct(args: argparse.Namespace, up_port: int) -> list[Row]:
    return measure(direct_target(up_port), args.duration)


def run_target(name: str, fn: Any, *fn_args: Any) -> list[Row]:
    """Run one target's measurements; a failure becomes a row instead of aborting the run."""
    print(f"== {name}", flush=True)
    try:
        return list(fn(*fn_args))
    except Exception as exc:  # noqa: BLE001 - reported in the table and JSON
        print(f"  {name} FAILED: {exc}", file=sys.stderr, flush=True)
        return [Row(name, conns, failure=str(exc).splitlines()[0][:200]) for _, conns in LEVELS]


# ---------------------------------------------------------------- report


def metric(rows: list[Row], target: str, conns: int, name: str) -> float | None:
    """rows[target, conns].name (the mean over rounds), or None if that run is missing or failed."""
    values = [float(getattr(r, name)) for r in rows
              if r.target == target and r.concurrency == conns and r.failure is None and getattr(r, name) is not None]
    return sum(values) / len(values) if values else None


def summarize(rows: list[Row]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    direct_p50 = metric(rows, "direct", 1, "p50_ms")
    for gw in GATEWAYS:
        p50 = metric(rows, gw, 1, "p50_ms")
        added = p50 - direct_p50 if p50 is not None and direct_p50 is not None else None
        out[f"{gw}_added_p50_ms_c1"] = round(added, 3) if added is not None else None
    s16, l16 = metric(rows, "strata", 16, "rps"), metric(rows, "litellm", 16, "rps")
    out["rps_ratio_strata_over_litellm_c16"] = round(s16 / l16, 2) if s16 and l16 else None
    p16 = metric(rows, "portkey", 16, "rps")
    out["rps_ratio_strata_over_portkey_c16"] = round(s16 / p16, 2) if s16 and p16 else None
    out["rps_ratio_portkey_over_litellm_c16"] = round(p16 / l16, 2) if p16 and l16 else None
    s2 = metric(rows, "strata-2dep", 16, "rps")
    out["rps_ratio_strata_2dep_over_litellm_c16"] = round(s2 / l16, 2) if s2 and l16 else None
    for gw in EXTRA_TARGETS:
        r = metric(rows, gw, 16, "rps")
        out[f"rps_ratio_{gw}_over_litellm_c16"] = round(r / l16, 2) if r and l16 else None
        out[f"rps_{gw}_over_strata_c16"] = round(r / s16, 3) if r and s16 else None
    for conns in (1, 16):  # the ledger journal's cost, the median over rounds of each round's pair
        rps = paired(rows, conns, "rps")
        out[f"journal_rps_cost_c{conns}"] = round(1 - statistics.median(rps), 4) if rps else None
        cpu = paired(rows, conns, "cpu_us")
        out[f"journal_cpu_cost_c{conns}"] = round(statistics.median(cpu) - 1, 4) if cpu else None
    return out


def paired(rows: list[Row], conns: int, name: str, on: str = "strata", off: str = "strata-nojournal") -> list[float]:
    """Per round: ``on``'s value over ``off``'s, measured minutes apart in the same conditions."""
    ratios = []
    for k in sorted({r.round for r in rows}):
        a, b = (next((getattr(r, name) for r in rows if r.target == t and r.concurrency == conns and r.round == k
                      and r.failure is None), None) for t in (on, off))
        if a and b:
            ratios.append(a / b)
    return ratios


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(rows: list[Row], summary: dict[str, float | None]) -> str:
    lines = [
        "| target | conc | RPS | p50 ms | p99 ms | RSS MiB (procs) | CPU µs/req | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    rounds = any(r.round for r in rows)
    for r in rows:
        errs = r.failure or ", ".join(f"{k}={v}" for k, v in r.errors.items()) or "0"
        name = f"{r.target} #{r.round + 1}" if rounds and r.target.startswith("strata") else r.target
        lines.append(
            f"| {name} | {r.concurrency} | {fmt(r.rps, '.0f')} | {fmt(r.p50_ms, '.3f')} "
            f"| {fmt(r.p99_ms, '.3f')} | {fmt(r.rss_mb, '.1f')}{f' ({r.procs})' if r.procs else ''} "
            f"| {fmt(r.cpu_us, '.0f')} | {errs} |"
        )
    lines.append("")
    for gw in GATEWAYS:
        lines.append(f"- added p50 at c=1, {gw}: {fmt(summary.get(f'{gw}_added_p50_ms_c1'), '.3f')} ms")
    ratio = summary["rps_ratio_strata_over_litellm_c16"]
    lines.append(f"- RPS ratio Strata/LiteLLM at c=16: {fmt(ratio, '.2f')}")
    lines.append(f"- RPS ratio Strata/Portkey at c=16: {fmt(summary['rps_ratio_strata_over_portkey_c16'], '.2f')}"
                 f" (Portkey/LiteLLM: {fmt(summary['rps_ratio_portkey_over_litellm_c16'], '.2f')})")
    ratio2 = summary["rps_ratio_strata_2dep_over_litellm_c16"]
    lines.append(f"- RPS ratio Strata (2 deployments, balancer on)/LiteLLM at c=16: {fmt(ratio2, '.2f')}")
    for gw in EXTRA_TARGETS:
        vs_litellm = fmt(summary.get(f"rps_ratio_{gw}_over_litellm_c16"), ".2f")
        vs_strata = fmt(summary.get(f"rps_{gw}_over_strata_c16"), ".3f")
        lines.append(f"- {gw}: RPS ratio over LiteLLM at c=16 {vs_litellm}, over bare Strata {vs_strata}")
    for conns in (1, 16):
        cost = summary.get(f"journal_rps_cost_c{conns}")
        pct = cost * 100 if cost is not None else None
        cpu = summary.get(f"journal_cpu_cost_c{conns}")
        cpu_pct = cpu * 100 if cpu is not None else None
        lines.append(f"- ledger journal at c={conns}: RPS cost {fmt(pct, '.1f')}%, "
                     f"gateway CPU per request {fmt(cpu_pct, '+.1f')}%")
    return "\n".join(lines)


def metadata(args: argparse.Namespace) -> dict[str, Any]:
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False)
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "warmup_s": WARMUP_S,
        "levels": [{"wrk_threads": t, "connections": c} for t, c in LEVELS],
        "cpus": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
        "loadavg_at_start": args.loadavg_at_start,
        "python": platform.python_version(),
        "wrk": (wrk.stdout + wrk.stderr).strip().splitlines()[0] if (wrk.stdout + wrk.stderr) else None,
        "litellm": None if args.skip_litellm else litellm_version(),
        "portkey": None if args.skip_portkey else portkey_version(),
    }


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run (default 10)")
    ap.add_argument("--json-out", type=Path, help="write results JSON here")
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument("--skip-portkey", action="store_true")
    ap.add_argument("--skip-strata", action="store_true", help="measure only direct (and LiteLLM)")
    ap.add_argument("--skip-governance", action="store_true",
                    help="skip the limits/budgets (memory, Redis) and exact-cache targets")
    ap.add_argument("--strata-cmd", help="override the Strata command (placeholders: see module doc)")
    ap.add_argument("--targets", help=f"comma-separated Strata targets (default: all): {', '.join(STRATA_TARGETS)}")
    ap.add_argument("--rounds", type=int, default=1, help="run the Strata targets this many times, interleaved")
    ap.add_argument("--together", action="store_true",
                    help="start the Strata targets together and load them at the same time (A/B on a busy machine)")
    return ap.parse_args()


def strata_targets(args: argparse.Namespace) -> list[str]:
    names = args.targets.split(",") if args.targets else list(STRATA_TARGETS)
    unknown = set(names) - set(STRATA_TARGETS)
    if unknown:
        sys.exit(f"unknown --targets {', '.join(sorted(unknown))}; choose from {', '.join(STRATA_TARGETS)}")
    return [n for n in names if not (args.skip_governance and n in GOVERNANCE_TARGETS)]


def run_all(args: argparse.Namespace, tmp: Path) -> list[Row]:
    with fixed_upstream(tmp) as up_port:
        rows = run_target("direct", bench_direct, args, up_port)
        if not args.skip_strata:
            names = strata_targets(args)
            for k in range(args.rounds):
                if args.together:
                    measured = run_target("+".join(names), bench_together, args, tmp, up_port, names)
                    rows += [replace(r, round=k) for r in measured]
                    continue
                for name in names if k % 2 == 0 else reversed(names):  # A B, B A, ...: no target always first
                    measured = run_target(name, bench_strata, args, tmp, up_port, name, STRATA_TARGETS[name])
                    rows += [replace(r, round=k) for r in measured]
        if not args.skip_litellm:
            rows += run_target("litellm", bench_litellm, args, tmp, up_port)
        if not args.skip_portkey:
            rows += run_target("portkey", bench_portkey, args, tmp, up_port)
    return rows


def main() -> int:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    # SIGTERM/SIGHUP unwind like Ctrl-C, so every `finally` stops what it started.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    args.loadavg_at_start = os.getloadavg()
    if args.loadavg_at_start[0] > 0.5:
        print(f"warning: load average {args.loadavg_at_start[0]:.2f}; other work will skew results", flush=True)
    with tempfile.TemporaryDirectory(prefix="strata-bench-") as tmpdir:
        rows = run_all(args, Path(tmpdir))
    summary = summarize(rows)
    print("\n" + markdown(rows, summary))
    if args.json_out:
        doc = {"meta": metadata(args), "results": [asdict(r) for r in rows], "summary": summary}
        args.json_out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {args.json_out}")
    return 1 if any(r.failure for r in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted; all benchmark processes stopped")
