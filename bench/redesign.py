"""The request pipeline's redesign and tracing, measured: the gateway before the redesign (a git commit, run
from a worktree), after it with tracing off, with tracing on (Strata's trace store, 100% sampled), and with
with the store in the database (``tracing.store.backend: database``, the traces table in the gateway's SQLite),
and with tracing on and exporting by OTLP (the memory store + OTLP/HTTP to bench/otlp_sink.py, 100% sampled),
side by side over the same fixed upstream, rounds interleaved (reversed every other round); LiteLLM once in the
same run. The baseline runs with the plain config: its commit predates the ``tracing:`` setting.

    python bench/redesign.py --baseline 114a638 --rounds 3 --duration 10 --json-out bench/results/redesign.json

Both sides run from git worktrees (``--baseline`` and ``--after``, default HEAD, resolved once at the start)
with this venv's packages, so edits others make to the working tree during a run change nothing. Figures
are medians over rounds; a ratio is the median of the per-round ratios (each round shares its own noise).

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
import urllib.request
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
    cpu_model,
    direct_target,
    fixed_upstream,
    free_port,
    litellm_target,
    litellm_version,
    spawned,
    wait_ready,
)
from overhead_load import Row, measure

REPO = BENCH.parent
TRACING_OFF = STRATA_CONFIG + "tracing: {{enabled: false}}\n"
TRACING_STORE = STRATA_CONFIG + "tracing: {{enabled: true, sample_rate: 1.0}}\n"
TRACING_STORE_DB = STRATA_CONFIG + ("tracing: {{enabled: true, sample_rate: 1.0, "
                                    "store: {{backend: database}}}}\n")
TRACING_OTLP = STRATA_CONFIG + ('tracing: {{enabled: true, sample_rate: 1.0, '
                                'otlp: {{endpoint: "http://127.0.0.1:{otlp_port}"}}}}\n')
TARGETS = {"baseline": STRATA_CONFIG, "tracing-off": TRACING_OFF, "tracing-store": TRACING_STORE,
           "tracing-store-db": TRACING_STORE_DB, "tracing-otlp": TRACING_OTLP}


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
    check_src(env, src)
    cmd = [sys.executable, "-m", "strata", "up", "--config", str(config), "--host", HOST, "--port", str(port),
           "--data-dir", str(data_dir)]
    log = data_dir / f"{name}.log"
    with spawned(cmd, log, env=env, cwd=tmp) as proc:
        target = Target(name, f"http://{HOST}:{port}", STRATA_KEY, proc)
        wait_ready(f"{target.base_url}/readyz", 60, proc, log)
        check_chat(target)
        yield target


def check_src(env: dict[str, str], src: Path) -> None:
    """Fail unless ``import strata`` with this environment loads the package from src (the venv's editable
    install points at this checkout's src; PYTHONPATH must win over it for the baseline)."""
    out = subprocess.run([sys.executable, "-c", "import strata; print(strata.__file__)"], env=env,
                         capture_output=True, text=True, check=True)
    loaded = Path(out.stdout.strip()).resolve()
    if not loaded.is_relative_to(src.resolve()):
        raise RuntimeError(f"strata loaded from {loaded}, not from {src}")


def mid(rows: list[Row], target: str, conns: int, field: str) -> float | None:
    """The median over rounds of one measure."""
    values = [getattr(r, field) for r in rows if r.target == target and r.concurrency == conns
              and r.failure is None and getattr(r, field) is not None]
    return statistics.median(values) if values else None


def round_ratio(rows: list[Row], num: str, den: str, conns: int = 16) -> float | None:
    """The median over rounds of num's RPS / den's RPS in the same round: the rounds are interleaved, so a
    ratio within one round shares that round's noise."""
    by = {(r.target, r.round): r.rps for r in rows if r.concurrency == conns and r.failure is None and r.rps}
    ratios = [by[(num, k)] / by[(den, k)] for (t, k) in by if t == num and (den, k) in by]
    return statistics.median(ratios) if ratios else None


def round_diff(rows: list[Row], a: str, b: str, conns: int = 1) -> float | None:
    """The median over rounds of a's p50 minus b's p50 in the same round (ms)."""
    by = {(r.target, r.round): r.p50_ms for r in rows if r.concurrency == conns and r.failure is None
          and r.p50_ms is not None}
    diffs = [by[(a, k)] - by[(b, k)] for (t, k) in by if t == a and (b, k) in by]
    return statistics.median(diffs) if diffs else None


def sink_counts(port: int) -> str | None:
    """The OTLP sink's "requests bytes" received so far."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=5) as resp:
            return str(resp.read().decode().strip())
    except OSError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="114a638", help="git commit of the gateway before the redesign")
    ap.add_argument("--after", default="HEAD", help="git commit of the gateway after the redesign")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run")
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument("--targets", default=",".join(TARGETS),
                    help=f"comma-separated targets to run (default all: {','.join(TARGETS)})")
    ap.add_argument("--also", metavar="REV", help="one more target, 'off@REV': tracing off, from a worktree "
                    "of REV (e.g. the commit before a change, with --after the change)")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    args.after = _commit(args.after)
    targets = {name: TARGETS[name] for name in args.targets.split(",")}
    if args.also:
        args.also = _commit(args.also)
        targets[f"off@{args.also}"] = TRACING_OFF
    args.names = list(targets)
    rows: list[Row] = []
    load = {"start": os.getloadavg()}
    with (tempfile.TemporaryDirectory(prefix="strata-redesign-") as t, worktree(args.baseline) as old,
          worktree(args.after) as new, worktree(args.also or args.after) as also):
        tmp = Path(t)
        otlp_port = free_port()
        sink = subprocess.Popen([sys.executable, str(BENCH / "otlp_sink.py"), str(otlp_port)])
        try:
            with fixed_upstream(tmp) as up_port:
                names = list(targets)
                for k in range(args.rounds):
                    print(f"== round {k + 1}: direct", flush=True)
                    rows += with_round(measure(direct_target(up_port), args.duration), k)
                    for name in names if k % 2 == 0 else reversed(names):
                        src = (old if name == "baseline" else also if name.startswith("off@") else new) / "src"
                        print(f"== round {k + 1}: {name}", flush=True)
                        with gateway(name, targets[name], tmp, up_port, otlp_port, src) as target:
                            rows += with_round(measure(target, args.duration), k)
                if not args.skip_litellm:
                    print("== litellm", flush=True)
                    with litellm_target(tmp, up_port) as target:
                        rows += measure(target, args.duration)
            sunk = sink_counts(otlp_port)
        finally:
            sink.terminate()
            sink.wait()
    load["end"] = os.getloadavg()
    print(f"OTLP sink received (requests bytes): {sunk}")
    report(rows, args, {"load_avg": load, "otlp_sink_requests_bytes": sunk})


def with_round(rows: list[Row], k: int) -> list[Row]:
    for row in rows:
        row.round = k
    return rows


def report(rows: list[Row], args: argparse.Namespace, extra: dict[str, object]) -> None:
    names = ["direct", *args.names, *([] if args.skip_litellm else ["litellm"])]
    direct_p50 = mid(rows, "direct", 1, "p50_ms")
    print("\n| target | rps c=1 | p50 ms c=1 | added p50 ms c=1 | CPU µs/req c=1 | rps c=16 | p50 ms c=16 "
          "| p99 ms c=16 | CPU µs/req c=16 | RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in names:
        p50 = mid(rows, n, 1, "p50_ms")
        cells = [mid(rows, n, 1, "rps"), p50, _diff(p50, direct_p50) if n != "direct" else None,
                 mid(rows, n, 1, "cpu_us"), mid(rows, n, 16, "rps"), mid(rows, n, 16, "p50_ms"),
                 mid(rows, n, 16, "p99_ms"), mid(rows, n, 16, "cpu_us"), mid(rows, n, 16, "rss_mb")]
        print(f"| {n} | " + " | ".join("-" if c is None else f"{c:,.3f}" if c < 100 else f"{c:,.0f}"
                                       for c in cells) + " |")
    base, off = mid(rows, "baseline", 16, "rps"), mid(rows, "tracing-off", 16, "rps")
    lit = mid(rows, "litellm", 16, "rps")
    summary: dict[str, float | None] = {
        "rps_c16_after_over_before": _ratio(off, base),
        "rps_c16_after_over_before_median_of_rounds": round_ratio(rows, "tracing-off", "baseline"),
        "p50_c1_after_minus_before_ms": _diff(mid(rows, "tracing-off", 1, "p50_ms"),
                                              mid(rows, "baseline", 1, "p50_ms")),
        "p50_c1_after_minus_before_ms_median_of_rounds": round_diff(rows, "tracing-off", "baseline"),
    }
    for name in ("tracing-store", "tracing-store-db", "tracing-otlp"):
        key = name.removeprefix("tracing-").replace("-", "_")
        summary[f"rps_c16_{key}_over_off"] = _ratio(mid(rows, name, 16, "rps"), off)
        summary[f"rps_c16_{key}_over_off_median_of_rounds"] = round_ratio(rows, name, "tracing-off")
    if args.also:
        also = f"off@{args.also}"
        summary["rps_c16_after_over_also_median_of_rounds"] = round_ratio(rows, "tracing-off", also)
        summary["p50_c1_after_minus_also_ms_median_of_rounds"] = round_diff(rows, "tracing-off", also)
        summary["p50_c1_also_minus_before_ms_median_of_rounds"] = round_diff(rows, also, "baseline")
    for name in ("baseline", *TARGETS):
        summary[f"rps_c16_{name.replace('-', '_')}_over_litellm"] = _ratio(mid(rows, name, 16, "rps"), lit)
    print()
    for k, v in summary.items():
        print(f"{k}: {'-' if v is None else f'{v:.3f}'}")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "cpu": cpu_model()}
        args.json_out.write_text(json.dumps({"machine": machine, "baseline": args.baseline,
                                             "after": args.after, "litellm": litellm_version(),
                                             "rounds": args.rounds, "duration_s": args.duration, **extra,
                                             "summary": summary, "rows": [asdict(r) for r in rows]}, indent=2))


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _diff(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def _commit(rev: str) -> str:
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", f"{rev}^{{commit}}"], capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


if __name__ == "__main__":
    main()
