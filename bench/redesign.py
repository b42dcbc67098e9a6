"""The request pipeline's redesign and tracing, measured: the gateway before the redesign (a git commit, run
from a worktree), after it with tracing off, with tracing on (Strata's trace store, 100% sampled), and with
tracing on and exporting by OTLP (store + OTLP/HTTP to bench/otlp_sink.py, 100% sampled), side by side over
the same fixed upstream, rounds interleaved (reversed every other round); LiteLLM once in the same run.

    python bench/redesign.py --baseline 114a638 --rounds 3 --duration 10 --json-out bench/results/redesign.json

Needs wrk; LiteLLM from bench/.venv-litellm (bench/setup_litellm.sh), --skip-litellm leaves it out.
Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from gateways import (
    BENCH,
    HOST,
    STRATA_CONFIG,
    STRATA_KEY,
    Target,
    check_chat,
    fixed_upstream,
    free_port,
    litellm_target,
    spawned,
    wait_ready,
)
from overhead_load import Row, measure

REPO = BENCH.parent
TRACING_OFF = STRATA_CONFIG + "tracing: {{enabled: false}}\n"
TRACING_STORE = STRATA_CONFIG + "tracing: {{enabled: true, sample_rate: 1.0}}\n"
TRACING_OTLP = STRATA_CONFIG + ('tracing: {{enabled: true, sample_rate: 1.0, '
                                'otlp: {{endpoint: "http://127.0.0.1:{otlp_port}"}}}}\n')
TARGETS = {"baseline": STRATA_CONFIG, "tracing-off": TRACING_OFF, "tracing-store": TRACING_STORE,
           "tracing-otlp": TRACING_OTLP}


@contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """The code of ``commit`` in a temporary git worktree (its src/ is run with this venv's packages)."""
    path = Path(tempfile.mkdtemp(prefix="strata-baseline-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), commit], check=True,
                   capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], check=False,
                       capture_output=True)


@contextmanager
def gateway(name: str, template: str, tmp: Path, up_port: int, otlp_port: int, src: Path) -> Iterator[Target]:
    port, data_dir = free_port(), Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp))
    config = data_dir / f"{name}.yaml"
    config.write_text(template.format(upstream_port=up_port, otlp_port=otlp_port))
    env = {**os.environ, "STRATA_ADMIN_KEY": STRATA_KEY, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-m", "strata", "up", "--config", str(config), "--host", HOST, "--port", str(port),
           "--data-dir", str(data_dir)]
    log = data_dir / f"{name}.log"
    with spawned(cmd, log, env=env, cwd=tmp) as proc:
        target = Target(name, f"http://{HOST}:{port}", STRATA_KEY, proc)
        wait_ready(f"{target.base_url}/readyz", 60, proc, log)
        check_chat(target)
        yield target


def mean(rows: list[Row], target: str, conns: int, field: str) -> float | None:
    values = [getattr(r, field) for r in rows if r.target == target and r.concurrency == conns
              and r.failure is None and getattr(r, field) is not None]
    return statistics.mean(values) if values else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="114a638", help="git commit of the gateway before the redesign")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run")
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="strata-redesign-") as t, worktree(args.baseline) as old:
        tmp = Path(t)
        otlp_port = free_port()
        sink = subprocess.Popen([sys.executable, str(BENCH / "otlp_sink.py"), str(otlp_port)])
        try:
            with fixed_upstream(tmp) as up_port:
                names = list(TARGETS)
                for k in range(args.rounds):
                    for name in names if k % 2 == 0 else reversed(names):
                        src = old / "src" if name == "baseline" else REPO / "src"
                        print(f"== round {k + 1}: {name}", flush=True)
                        with gateway(name, TARGETS[name], tmp, up_port, otlp_port, src) as target:
                            for row in measure(target, args.duration):
                                row.round = k
                                rows.append(row)
                if not args.skip_litellm:
                    print("== litellm", flush=True)
                    with litellm_target(tmp, up_port) as target:
                        rows += measure(target, args.duration)
        finally:
            sink.terminate()
    report(rows, args)


def report(rows: list[Row], args: argparse.Namespace) -> None:
    names = [*TARGETS, *([] if args.skip_litellm else ["litellm"])]
    print("\n| target | rps c=1 | p50 ms c=1 | rps c=16 | p50 ms c=16 | p99 ms c=16 | CPU µs/req c=16 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for n in names:
        cells = [mean(rows, n, 1, "rps"), mean(rows, n, 1, "p50_ms"), mean(rows, n, 16, "rps"),
                 mean(rows, n, 16, "p50_ms"), mean(rows, n, 16, "p99_ms"), mean(rows, n, 16, "cpu_us")]
        print(f"| {n} | " + " | ".join("-" if c is None else f"{c:,.2f}" if c < 100 else f"{c:,.0f}"
                                       for c in cells) + " |")
    base, off = mean(rows, "baseline", 16, "rps"), mean(rows, "tracing-off", 16, "rps")
    store, otlp = mean(rows, "tracing-store", 16, "rps"), mean(rows, "tracing-otlp", 16, "rps")
    summary = {
        "rps_c16_after_over_before": off / base if off and base else None,
        "p50_c1_after_minus_before_ms": _diff(mean(rows, "tracing-off", 1, "p50_ms"),
                                              mean(rows, "baseline", 1, "p50_ms")),
        "rps_c16_store_over_off": store / off if store and off else None,
        "rps_c16_otlp_over_off": otlp / off if otlp and off else None,
        "rps_c16_tracing_off_over_litellm": (off / lit) if off and (lit := mean(rows, "litellm", 16, "rps")) else None,
    }
    print()
    for k, v in summary.items():
        print(f"{k}: {'-' if v is None else f'{v:.3f}'}")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                                             "baseline": args.baseline, "rounds": args.rounds,
                                             "duration_s": args.duration, "summary": summary,
                                             "rows": [asdict(r) for r in rows]}, indent=2))


def _diff(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


if __name__ == "__main__":
    main()
