"""Gateway overhead benchmark: Strata vs LiteLLM proxy over the same fixed upstream.

Why: a gateway's cost is the latency and throughput it adds on top of the model
server. This starts bench/fixed_upstream.py (a reply-from-memory server that is
never the bottleneck), loads it directly with wrk, then through Strata and through
the LiteLLM proxy, and reports RPS, p50, p99 and gateway RSS at concurrency 1 and 16.

    python bench/gateway_overhead.py --json-out bench/results.json
    python bench/gateway_overhead.py --skip-litellm --duration 5
    python bench/gateway_overhead.py --strata-cmd "strata up --config {config} --port {port} ..."
    python bench/gateway_overhead.py --skip-litellm --targets strata,strata-nojournal --rounds 3

--targets picks the Strata targets to run (default: all); --rounds repeats them, interleaved, in reverse
order every other round, and the summary averages the rounds (on a shared machine, compare targets run
side by side like this).

--strata-cmd placeholders: {config} {host} {port} {data_dir} {upstream_port}.
LiteLLM comes from bench/.venv-litellm (create it with bench/setup_litellm.sh).
Needs wrk on PATH (apt-get install -y wrk). Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
HOST = "127.0.0.1"
STRATA_KEY = "sk-bench-admin-0123456789abcdef"
LITELLM_KEY = "sk-litellm-bench-0123456789abcdef"
LITELLM_VENV = BENCH / ".venv-litellm"
CHAT_PATH = "/v1/chat/completions"
EXPECTED_TEXT = "Hello from the fixed upstream."
LEVELS = ((1, 1), (2, 16))  # (wrk threads, connections)
WARMUP_S = 2

STRATA_CONFIG = """\
routes:
  - name: fixed
    deployments:
      - name: fixed-upstream
        engine:
          type: openai
          base_url: http://127.0.0.1:{upstream_port}/v1
          model: fixed
        price:
          input_per_mtok: 1.0
          output_per_mtok: 2.0
"""

# The same upstream behind two deployments of one route: the balancer (P2C) and breaker run per request.
STRATA_CONFIG_TWO = """\
routes:
  - name: fixed
    deployments:
      - name: fixed-a
        engine: {{type: openai, base_url: "http://127.0.0.1:{upstream_port}/v1", model: fixed}}
        price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
      - name: fixed-b
        engine: {{type: openai, base_url: "http://127.0.0.1:{upstream_port}/v1", model: fixed}}
        price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
"""

# Governance on: a key, a team and a route limit, and a team budget, none of them ever reached, so every
# request pays for the checks (three GCRA counters, one budget reservation and its settlement).
GOVERNED = """\
limits:
  - {{scope: key, rpm: 100000000, tpm: 1000000000}}
  - {{scope: team, rpm: 100000000}}
  - {{scope: route, subject: fixed, rpm: 100000000}}
budgets:
  - {{scope: team, subject: "*", period: month, cap_usd: 1000000000}}
"""
STRATA_CONFIG_LIMITS = STRATA_CONFIG + GOVERNED
STRATA_CONFIG_LIMITS_REDIS = STRATA_CONFIG + GOVERNED + """\
state: {{backend: redis, redis_url: "redis://127.0.0.1:6379/0", key_prefix: "bench-{prefix}"}}
"""
# Exact cache on, for every request (wrk sends the same body): after the first, all are cache hits.
STRATA_CONFIG_CACHE = STRATA_CONFIG.replace("  - name: fixed\n", "  - name: fixed\n    cache: {{exact: true, "
                                            "only_deterministic: false}}\n", 1)
# The ledger journal off (rows only batched in memory, lost on a crash): what the journal's per-row write costs.
STRATA_CONFIG_NOJOURNAL = STRATA_CONFIG + "ledger: {{journal: {{enabled: false}}}}\n"
GOVERNANCE_TARGETS = {"strata-limits": STRATA_CONFIG_LIMITS, "strata-limits-redis": STRATA_CONFIG_LIMITS_REDIS,
                      "strata-cache": STRATA_CONFIG_CACHE}
EXTRA_TARGETS = {**GOVERNANCE_TARGETS, "strata-nojournal": STRATA_CONFIG_NOJOURNAL}
STRATA_TARGETS = {"strata": STRATA_CONFIG, "strata-2dep": STRATA_CONFIG_TWO, **EXTRA_TARGETS}
GATEWAYS = (*STRATA_TARGETS, "litellm")

LITELLM_CONFIG = """\
model_list:
  - model_name: fixed
    litellm_params:
      model: openai/fixed
      api_base: http://127.0.0.1:{upstream_port}/v1
      api_key: x
      input_cost_per_token: 0.000001  # same prices as the Strata config
      output_cost_per_token: 0.000002
litellm_settings:
  telemetry: false
  set_verbose: false
general_settings:
  master_key: {master_key}
"""


@dataclass
class Target:
    """Something wrk can load: the upstream itself or a gateway process in front of it."""

    name: str
    base_url: str
    key: str
    proc: subprocess.Popen[bytes] | None = None


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


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextmanager
def spawned(
    cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run cmd in its own process group; always SIGTERM (then SIGKILL) the group on exit."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    try:
        yield proc
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait_s)
            # The leader is gone; make sure nothing it forked survives it.
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


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


# ---------------------------------------------------------------- HTTP checks


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(tail(log), file=sys.stderr)
            raise RuntimeError(f"exited with {proc.returncode} before ready: {tail(log, 1)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    print(tail(log), file=sys.stderr)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f}s: {tail(log, 1)}")


def check_chat(target: Target) -> None:
    """One real request, so a 401/404 gateway is caught before wrk counts errors as speed."""
    body = json.dumps({"model": "fixed", "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = urllib.request.Request(
        target.base_url + CHAT_PATH,
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {target.key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            reply = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{target.name}: HTTP {exc.code}: {exc.read()[:300]!r}") from exc
    text = reply.get("choices", [{}])[0].get("message", {}).get("content")
    if text != EXPECTED_TEXT:
        raise RuntimeError(f"{target.name}: unexpected reply {reply!r:.300}")


def tail(path: Path, n: int = 20) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        return "\n".join(lines[-n:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------- wrk


def run_wrk(target: Target, threads: int, conns: int, duration_s: int) -> dict[str, Any]:
    cmd = [
        "wrk", f"-t{threads}", f"-c{conns}", f"-d{duration_s}s", "--timeout", "10s",
        "-s", str(BENCH / "wrk_post.lua"), target.base_url + CHAT_PATH, "--", "fixed", target.key,
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 30, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            return dict(json.loads(line[len("WRK_JSON ") :]))
    raise RuntimeError(f"wrk gave no result (rc={out.returncode}): {out.stderr.strip()[:300]}")


def measure(target: Target, duration_s: int) -> list[Row]:
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


# ---------------------------------------------------------------- targets


def strata_cmd(args: argparse.Namespace, config: Path, port: int, data_dir: Path, up_port: int) -> list[str]:
    fields = {"config": config, "host": HOST, "port": port, "data_dir": data_dir, "upstream_port": up_port}
    if args.strata_cmd:
        return [part.format(**fields) for part in shlex.split(args.strata_cmd)]
    exe = Path(sys.executable).parent / "strata"
    strata = str(exe) if exe.exists() else shutil.which("strata") or str(exe)
    return [strata, "up", "--config", str(config), "--host", HOST, "--port", str(port),
            "--data-dir", str(data_dir)]  # fmt: skip


def bench_strata(args: argparse.Namespace, tmp: Path, up_port: int, name: str = "strata",
                 template: str = STRATA_CONFIG) -> list[Row]:
    with strata_target(args, tmp, up_port, name, template) as target:
        return measure(target, args.duration)


def bench_together(args: argparse.Namespace, tmp: Path, up_port: int, names: list[str]) -> list[Row]:
    with ExitStack() as stack:
        targets = [stack.enter_context(strata_target(args, tmp, up_port, n, STRATA_TARGETS[n])) for n in names]
        return measure_together(targets, args.duration)


@contextmanager
def strata_target(args: argparse.Namespace, tmp: Path, up_port: int, name: str, template: str) -> Iterator[Target]:
    """A ``strata up`` process on the upstream, ready and checked with one real request."""
    port, data_dir = free_port(), Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp))  # fresh each round
    config = data_dir / f"{name}.yaml"
    config.write_text(template.format(upstream_port=up_port, prefix=os.getpid()))
    env = {**os.environ, "STRATA_ADMIN_KEY": STRATA_KEY}
    log = data_dir / f"{name}.log"
    with spawned(strata_cmd(args, config, port, data_dir, up_port), log, env=env, cwd=tmp) as proc:
        target = Target(name, f"http://{HOST}:{port}", STRATA_KEY, proc)
        wait_ready(f"{target.base_url}/readyz", proc, 60, log)
        check_chat(target)
        yield target


def bench_litellm(args: argparse.Namespace, tmp: Path, up_port: int) -> list[Row]:
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        raise RuntimeError(f"{exe} missing; run bench/setup_litellm.sh")
    port, config, log = free_port(), tmp / "litellm.yaml", tmp / "litellm.log"
    config.write_text(LITELLM_CONFIG.format(upstream_port=up_port, master_key=LITELLM_KEY))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LITELLM_MASTER_KEY")}
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # else it fetches the price map from GitHub at import
        LITELLM_MODE="PRODUCTION",  # don't load a .env file
        LITELLM_LOG="ERROR",  # also silences uvicorn's per-request access log
        LITELLM_TELEMETRY_DISABLED="true",  # usage telemetry veto (it is opt-in anyway)
        VIRTUAL_ENV=str(LITELLM_VENV),
        PATH=f"{LITELLM_VENV / 'bin'}:{env.get('PATH', '')}",
    )
    cmd = [str(exe), "--config", str(config), "--host", HOST, "--port", str(port), "--num_workers", "1"]
    with spawned(cmd, log, env=env, cwd=tmp) as proc:
        target = Target("litellm", f"http://{HOST}:{port}", LITELLM_KEY, proc)
        wait_ready(f"{target.base_url}/health/liveliness", proc, 120, log)
        check_chat(target)
        return measure(target, args.duration)


def bench_direct(args: argparse.Namespace, up_port: int) -> list[Row]:
    target = Target("direct", f"http://{HOST}:{up_port}", "x")
    check_chat(target)
    return measure(target, args.duration)


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


def litellm_version() -> str | None:
    py = LITELLM_VENV / "bin" / "python"
    if not py.exists():
        return None
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=60, check=False)
    return out.stdout.strip() or None


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
    }


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run (default 10)")
    ap.add_argument("--json-out", type=Path, help="write results JSON here")
    ap.add_argument("--skip-litellm", action="store_true")
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
    up_port = free_port()
    up_log = tmp / "upstream.log"
    up_cmd = [sys.executable, str(BENCH / "fixed_upstream.py"), "--host", HOST, "--port", str(up_port)]
    with spawned(up_cmd, up_log) as upstream:
        wait_ready(f"http://{HOST}:{up_port}/health", upstream, 15, up_log)
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
