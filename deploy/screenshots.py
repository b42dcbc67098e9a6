"""Take the screenshots of ``docs/operations.md`` (Prometheus and Alertmanager UIs). Not run by tests.

What it does, all on loopback:

1. starts a small faulty OpenAI-compatible upstream (``tests/upstreams.py``) and ``strata up`` with one route
   ``chat`` on it, with an availability SLO (99.5%) and no retries, so poisoned requests fail;
2. starts Alertmanager with the shipped ``deploy/prometheus/alertmanager.yml`` (webhooks pointed at a local
   receiver, group intervals 1s) and Prometheus with the shipped ``prometheus.yml`` and ``strata-rules.yml``
   (temp copies scraping/evaluating every second, ``for:`` 0s: the same copies ``tests/test_alerting.py`` runs);
3. drives traffic (10% of requests fail) until the page-tier alerts fire, about a minute;
4. screenshots with headless Chromium into ``docs/img/operations/``: Prometheus' alerts page, a graph of the
   route's error ratio and burn rate, and, as Debian's Alertmanager ships no web UI, ``amtool``'s routing tree
   and ``amtool alert query`` per tier (page, ticket, dashboard).

Run it from the repository root after ``make tools ui-tools`` (they unpack Prometheus, Alertmanager and the
JavaScript of Prometheus' classic web UI into ``.tools/``), in the dev venv:
``.venv/bin/python deploy/screenshots.py``. It needs user+mount namespaces (``unshare``), as the alerting test does.

Chromium is a dev tool for this one-off doc asset, not a project dependency: on Debian,
``apt-get install -y chromium``. Grafana is not screenshotted: it is in neither Debian nor PyPI.
Pillow, when installed, downscales a PNG over ~300 KB (they are well under it at these sizes).
"""

from __future__ import annotations

import html
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.receivers import WebhookReceiver  # noqa: E402
from tests.servers import StrataProcess, openai_route  # noqa: E402
from tests.test_alerting import (  # noqa: E402
    ALERTMANAGER,
    AMTOOL,
    PROMETHEUS,
    alertmanager_copy,
    prometheus_copy,
    started,
)
from tests.upstreams import POISON, FaultyUpstream, free_port  # noqa: E402

OUT = ROOT / "docs" / "img" / "operations"
WANTED = {"StrataHighErrorRate", "StrataAvailabilityBudgetBurnFast"}
ERRORS = 'route:strata_availability_errors:ratio_rate5m{route="chat"}'  # the shipped recording rule
BURN = ('route:strata_availability_errors:ratio_rate5m{route="chat"}'
        ' / on (route) route:strata_slo_error_budget:ratio{slo="availability"}')  # 1 = spending exactly the budget


SHARE = ROOT / ".tools" / "usr" / "share"  # `make tools ui-tools`: web UI templates, default.tmpl, libjs-*


def with_share(argv: list[str]) -> list[str]:
    """``argv`` run in a user+mount namespace of its own where /usr/share is the one unpacked into .tools: Debian's
    Prometheus reads its classic web UI from /usr/share/prometheus/web (linking to /usr/share/javascript) and its
    Alertmanager its default template from /usr/share/prometheus/alertmanager. Nothing outside the process changes."""
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
            'mount --bind "$0" /usr/share && exec "$@"', str(SHARE), *argv]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        raise SystemExit("no chromium on PATH (apt-get install -y chromium)")
    return found


def shoot(url: str, name: str, size: str = "1400,900") -> Path:
    """One headless Chromium screenshot of ``url``, downscaled if it is over ~300 KB."""
    path = OUT / name
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={size}", "--virtual-time-budget=10000",
                        f"--screenshot={path}", url], check=True, capture_output=True, timeout=120)
    shrink(path)
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size // 1024} KB")
    return path


def shrink(path: Path, limit: int = 300_000) -> None:
    """Downscale by 4/5 until under ``limit`` bytes (Pillow, when installed; else only a warning)."""
    try:
        from PIL import Image
    except ImportError:
        if path.stat().st_size > limit:
            print(f"warning: {path.name} is over {limit // 1000} KB and Pillow is not installed to shrink it")
        return
    while path.stat().st_size > limit:
        with Image.open(path) as img:
            smaller = img.resize((img.width * 4 // 5, img.height * 4 // 5), Image.LANCZOS)
        smaller.save(path, optimize=True)


def firing(prometheus: str) -> set[str]:
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}


def drive(strata: StrataProcess, prometheus: str, timeout: float = 150) -> None:
    """Batches of 10 chat requests, one poisoned (the upstream answers 500), until the page alerts fire."""
    client = strata.client()
    deadline = time.monotonic() + timeout
    i = 0
    while not WANTED <= firing(prometheus) or time.monotonic() < deadline - timeout + 60:
        if time.monotonic() > deadline:
            raise SystemExit(f"alerts not firing after {timeout}s: {firing(prometheus)}")
        for _ in range(10):
            text = f"{POISON} q{i}" if i % 10 == 0 else f"q{i}"
            i += 1
            try:
                client.chat.completions.create(model="chat", messages=[{"role": "user", "content": text}])
            except Exception:  # the poisoned ones: an OpenAI-shaped 502
                pass
        time.sleep(0.5)


def amtool_page(work: Path, am_url: str) -> Path:
    """Debian's Alertmanager ships no web UI (amtool instead): ``amtool alert query`` per tier, as a terminal."""
    assert AMTOOL is not None
    config = ROOT / "deploy" / "prometheus" / "alertmanager.yml"
    commands = [["config", "routes", "show", f"--config.file={config}"]]
    commands += [["alert", "query", f"tier={tier}"] for tier in ("page", "ticket", "dashboard")]
    blocks = []
    for args in commands:
        argv = [AMTOOL, *args] if args[0] == "config" else [AMTOOL, f"--alertmanager.url={am_url}", *args]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
        shown = " ".join(a.replace(str(ROOT) + "/", "") for a in args)
        blocks.append(f"$ amtool {shown}\n{out}")
    page = work / "amtool.html"
    page.write_text("<html><body style='background:#1e1e1e;color:#ddd;margin:16px'><pre style='font-size:13px;"
                    "white-space:pre-wrap'>" + html.escape("\n".join(blocks)) + "</pre></body></html>")
    return page


def graph_url(prometheus: str) -> str:
    params = {"g0.expr": ERRORS, "g0.tab": "0", "g0.range_input": "2m",
              "g1.expr": BURN, "g1.tab": "0", "g1.range_input": "2m"}
    return f"{prometheus}/classic/graph?{urllib.parse.urlencode(params)}"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="strata-shots-"))
    am_port, prom_port = free_port(), free_port()
    with WebhookReceiver() as receiver, FaultyUpstream() as upstream:
        route = openai_route("chat", upstream.base_url, "ok")
        route |= {"retries": 0, "slo": {"availability": 0.995, "latency": {"threshold_ms": 5000}},
                  "breaker": {"consecutive_failures": 1000, "error_rate": 1.0, "caller_failures": 0}}
        assert PROMETHEUS is not None and ALERTMANAGER is not None
        am = started(with_share([ALERTMANAGER, f"--config.file={alertmanager_copy(work, receiver)}",
                                  f"--storage.path={work / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
                                  "--cluster.listen-address="]),
                     work / "alertmanager.log", f"http://127.0.0.1:{am_port}/-/ready")
        strata = StrataProcess(work / "strata", {"routes": [route]}).start()
        prom = started(with_share([PROMETHEUS, f"--config.file={prometheus_copy(work, strata.port, am_port)}",
                                   f"--storage.tsdb.path={work / 'prom'}",
                                   f"--web.listen-address=127.0.0.1:{prom_port}"]),
                       work / "prometheus.log", f"http://127.0.0.1:{prom_port}/-/ready")
        prometheus, am_url = f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}"
        try:
            drive(strata, prometheus)
            time.sleep(3)  # Alertmanager's group_wait (1s in the copy) and one more evaluation
            shoot(f"{prometheus}/classic/alerts", "prometheus-alerts.png", "1400,1100")
            shoot(graph_url(prometheus), "prometheus-graph.png", "1400,1500")
            shoot(amtool_page(work, am_url).as_uri(), "alertmanager-alerts.png", "1200,560")
        finally:
            for proc in (prom, am):
                proc.terminate()
                proc.wait(30)
            strata.stop()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
