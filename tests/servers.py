"""Running a real Strata process for end-to-end tests (``strata up`` in a subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Table, create_engine, select

from strata.store.tables import LedgerRow
from tests.leaks import secret
from tests.upstreams import free_port

ADMIN_KEY = secret("sk-test-admin-0123456789abcdef")  # given through STRATA_ADMIN_KEY, never printed
T = TypeVar("T")


class StrataProcess:
    """``strata up`` on a free port with a config dict; stopped with SIGTERM like a real deployment."""

    def __init__(self, data_dir: Path, config: dict[str, Any] | None = None, env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = config
        # A HOME of its own: `strata up` records itself in ~/.strata/current.json, which is the user's, not a test's
        home = data_dir / ".home"
        self.env = {**os.environ, "HOME": str(home), "STRATA_ADMIN_KEY": ADMIN_KEY, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "strata.log"

    def start(self, ready_timeout: float = 180.0, require_ready: bool = True) -> StrataProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "strata", "up", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self.config is not None:
            path = self.data_dir / "strata.yaml"
            path.write_text(yaml.safe_dump(self.config))
            argv += ["--config", str(path)]
        self.proc = subprocess.Popen(argv, env=self.env, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT)
        self.wait_ready(ready_timeout, require_ready)
        return self

    def wait_ready(self, timeout: float = 180.0, require_ready: bool = True) -> None:
        deadline = time.monotonic() + timeout
        path = "/readyz" if require_ready else "/healthz"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"strata exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"strata not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def client(self, key: str = ADMIN_KEY, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, **kw)

    def async_client(self, key: str = ADMIN_KEY, **kw: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, **kw)

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kw)

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of the gateway's ``/metrics``, or None when that label set is absent."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return None

    def ledger(self) -> list[dict[str, Any]]:
        return ledger_rows(self.data_dir)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def openai_route(name: str, base_url: str, model: str, **engine: Any) -> dict[str, Any]:
    """A config route served by the ``openai`` engine, priced at $1/$2 per million tokens."""
    return {"name": name, "deployments": [{
        "name": f"{name}-dep",
        "engine": {"type": "openai", "base_url": base_url, "model": model, **engine},
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
    }]}


def table_rows(data_dir: Path, table: Table) -> list[dict[str, Any]]:
    """Every row of one table in a data dir's SQLite database."""
    engine = create_engine(f"sqlite:///{data_dir / 'strata.db'}")
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(table)).mappings()]
    finally:
        engine.dispose()


def ledger_rows(data_dir: Path) -> list[dict[str, Any]]:
    """Every row of the usage ledger (no admin endpoint lists rows)."""
    return table_rows(data_dir, LedgerRow.__table__)  # type: ignore[arg-type]


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll until ``probe()`` returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        time.sleep(interval)


def cli(proc: StrataProcess, *args: str) -> subprocess.Popen[str]:
    """``strata ARGS --url --key`` against a running Strata, started in the background so independent
    commands overlap their import time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    return subprocess.Popen([sys.executable, "-m", "strata", *args, "--url", proc.url, "--key", ADMIN_KEY],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**env, "COLUMNS": "200"})


def finished(p: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = p.communicate(timeout=60)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)
