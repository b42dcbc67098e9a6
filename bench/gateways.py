"""The processes the benchmarks start (not a benchmark itself): the fixed upstream, Strata, LiteLLM and
Portkey in front of it, their configs, waiting until they answer, and stopping them with everything they forked.

Why one module: bench/gateway_overhead.py, bench/ledger_crash.py and bench/failover.py all start the same
kinds of processes, and a fix to how one is started or awaited belongs to all of them. Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
HOST = "127.0.0.1"
STRATA_KEY = "sk-bench-admin-0123456789abcdef"
LITELLM_KEY = "sk-litellm-bench-0123456789abcdef"
LITELLM_VENV = BENCH / ".venv-litellm"
PORTKEY_DIR = BENCH / ".portkey"  # bench/setup_portkey.sh: npm @portkey-ai/gateway, its own folder
PORTKEY_PKG = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway"
# Node's JIT tiers Portkey's request path up over its first requests: on the 2-core machine its CPU per
# request fell from ~6 ms to ~2 ms over the first ~2,000 and then held, so it serves this many before the
# first measured level (the Python gateways have no such curve: their 2 s warm-up per level is enough).
PORTKEY_WARMUP_REQUESTS = 4000
CHAT_PATH = "/v1/chat/completions"
EXPECTED_TEXT = "Hello from the fixed upstream."


def fixed_route(*deployments: str, price: bool = True) -> str:
    """A config template (for ``str.format``, so braces are doubled) with one route, ``fixed``, whose
    deployments (one per name) all call the fixed upstream at ``{upstream_port}``."""
    engine = '{{type: openai, base_url: "http://127.0.0.1:{upstream_port}/v1", model: fixed}}'
    lines = ["routes:", "  - name: fixed", "    deployments:"]
    for name in deployments:
        lines += [f"      - name: {name}", f"        engine: {engine}"]
        if price:
            lines.append("        price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}")
    return "\n".join(lines) + "\n"


STRATA_CONFIG = fixed_route("fixed-upstream")
# The same upstream behind two deployments of one route: the balancer (P2C) and breaker run per request.
STRATA_CONFIG_TWO = fixed_route("fixed-a", "fixed-b")

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
PEERS = ("litellm", "portkey")  # the other gateways, each installed apart from Strata (bench/setup_*.sh)
GATEWAYS = (*STRATA_TARGETS, *PEERS)

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
    headers: dict[str, str] = field(default_factory=dict)  # sent on every request besides the bearer key
    warmup_requests: int = 0  # serve at least this many before measuring (a JIT-compiled gateway), 0: none
    body_file: Path | None = None  # the request body wrk sends instead of its own short chat request


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A quiet child process, its output discarded; the caller signals and reaps it."""
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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


# ---------------------------------------------------------------- HTTP checks


def wait_ready(url: str, timeout_s: float = 60, proc: subprocess.Popen[bytes] | None = None,
               log: Path | None = None) -> None:
    """Poll url until it answers 200; fail early, with the end of its log, if proc exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            if log is not None:
                print(tail(log), file=sys.stderr)
            raise RuntimeError(f"exited with {proc.returncode} before ready: {tail(log, 1)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    if log is not None:
        print(tail(log), file=sys.stderr)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f}s: {tail(log, 1)}")


def check_chat(target: Target) -> None:
    """One real request, so a 401/404 gateway is caught before wrk counts errors as speed."""
    body = json.dumps({"model": "fixed", "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = urllib.request.Request(
        target.base_url + CHAT_PATH,
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {target.key}", **target.headers},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            reply = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{target.name}: HTTP {exc.code}: {exc.read()[:300]!r}") from exc
    text = reply.get("choices", [{}])[0].get("message", {}).get("content")
    if text != EXPECTED_TEXT:
        raise RuntimeError(f"{target.name}: unexpected reply {reply!r:.300}")


def tail(path: Path | None, n: int = 20) -> str:
    if path is None:
        return "(no log)"
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        return "\n".join(lines[-n:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------- targets


@contextmanager
def fixed_upstream(tmp: Path) -> Iterator[int]:
    """bench/fixed_upstream.py on a free port (yielded), ready."""
    port, log = free_port(), tmp / "upstream.log"
    cmd = [sys.executable, str(BENCH / "fixed_upstream.py"), "--host", HOST, "--port", str(port)]
    with spawned(cmd, log) as proc:
        wait_ready(f"http://{HOST}:{port}/health", 15, proc, log)
        yield port


def direct_target(up_port: int) -> Target:
    target = Target("direct", f"http://{HOST}:{up_port}", "x")
    check_chat(target)
    return target


def strata_cmd(args: argparse.Namespace, config: Path, port: int, data_dir: Path, up_port: int) -> list[str]:
    fields = {"config": config, "host": HOST, "port": port, "data_dir": data_dir, "upstream_port": up_port}
    if args.strata_cmd:
        return [part.format(**fields) for part in shlex.split(args.strata_cmd)]
    exe = Path(sys.executable).parent / "strata"
    strata = str(exe) if exe.exists() else shutil.which("strata") or str(exe)
    return [strata, "up", "--config", str(config), "--host", HOST, "--port", str(port),
            "--data-dir", str(data_dir)]  # fmt: skip


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
        wait_ready(f"{target.base_url}/readyz", 60, proc, log)
        check_chat(target)
        yield target


@contextmanager
def litellm_target(tmp: Path, up_port: int) -> Iterator[Target]:
    """The LiteLLM proxy (from bench/.venv-litellm, one worker) on the upstream, ready and checked."""
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
        wait_ready(f"{target.base_url}/health/liveliness", 120, proc, log)
        check_chat(target)
        yield target


def litellm_version() -> str | None:
    py = LITELLM_VENV / "bin" / "python"
    if not py.exists():
        return None
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=60, check=False)
    return out.stdout.strip() or None


@contextmanager
def portkey_target(tmp: Path, up_port: int) -> Iterator[Target]:
    """Portkey's open-source gateway (Node.js, from bench/.portkey, one process) on the upstream, ready and
    checked. It has no config file: each request names its provider and upstream in headers, so wrk sends
    ``x-portkey-provider: openai`` and ``x-portkey-custom-host`` (the upstream's /v1) on every request, and the
    bearer key goes through to the upstream as the provider's key. Its open-source build has no gateway keys
    of its own (nothing to authenticate), no usage store and no metrics unless configured."""
    entry = PORTKEY_PKG / "build" / "start-server.js"
    node = shutil.which("node")
    if not entry.exists() or node is None:
        raise RuntimeError(f"{entry} or node missing; run bench/setup_portkey.sh")
    port, log = free_port(), tmp / "portkey.log"
    # production + --headless: no web console and its log stream, as a deployment would run it.
    env = {**os.environ, "NODE_ENV": "production"}
    env.pop("PORT", None)  # --port wins anyway; keep the environment from suggesting otherwise
    cmd = [node, str(entry), f"--port={port}", "--headless"]
    with spawned(cmd, log, env=env, cwd=tmp) as proc:
        headers = {"x-portkey-provider": "openai", "x-portkey-custom-host": f"http://{HOST}:{up_port}/v1"}
        target = Target("portkey", f"http://{HOST}:{port}", "x", proc, headers, PORTKEY_WARMUP_REQUESTS)
        wait_ready(f"{target.base_url}/", 60, proc, log)
        check_chat(target)
        yield target


def portkey_version() -> str | None:
    try:
        manifest = json.loads((PORTKEY_PKG / "package.json").read_text())
    except (OSError, ValueError):
        return None
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30, check=False)
    return f"{manifest.get('version')} (node {node.stdout.strip() or '?'})"


def cpu_model() -> str | None:
    """The machine's CPU model (from /proc/cpuinfo), for a benchmark's record."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
