"""Alerting tiers through real Prometheus and Alertmanager (Debian's packages, unpacked by ``make tools``).

- The shipped files are valid: ``promtool check rules``/``check config``, ``amtool check-config``; the rules'
  unit tests (``deploy/prometheus/strata-rules.test.yml``: every tier, every burn-rate window pair) pass under
  ``promtool test rules``; Alertmanager routes each tier to its receiver (``amtool config routes test``).
- End to end, on loopback: Strata serves a route on a faulty upstream, Prometheus scrapes it every second and
  evaluates the shipped rules, Alertmanager routes with the shipped config to this test's webhook receiver.
  10% of requests fail: the error-rate and fast burn-rate pages reach the page receiver; a dashboard-tier alert
  that fires at the same time reaches no receiver; Strata's own events, sent to Alertmanager
  (``alerts.format: alertmanager``), go through the same routing to the ticket receiver.

The copies the test runs differ from the shipped files only in addresses, intervals (1s) and ``for:`` (0s),
so the shipped rules keep realistic durations.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from strata.observe.metrics import Metrics
from tests.receivers import WebhookReceiver
from tests.servers import StrataProcess, openai_route, wait_for
from tests.upstreams import POISON, FaultyUpstream, free_port

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy" / "prometheus"
TOOLS = ROOT / ".tools" / "usr" / "bin"


def tool(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (str(TOOLS / name) if (TOOLS / name).exists() else None)
        if found:
            return found
    return None


PROMTOOL, PROMETHEUS = tool("promtool"), tool("prometheus")
AMTOOL, ALERTMANAGER = tool("amtool"), tool("alertmanager", "prometheus-alertmanager")
needs = pytest.mark.skipif(None in (PROMTOOL, PROMETHEUS, AMTOOL, ALERTMANAGER),
                           reason="prometheus/promtool/alertmanager/amtool not found on PATH or in .tools/usr/bin "
                                  "(run `make tools`: it unpacks Debian's prometheus and prometheus-alertmanager)")


DEBIAN_AM_DATA = Path("/usr/share/prometheus/alertmanager")  # Debian's build reads default.tmpl from here


def alertmanager(*args: str) -> list[str]:
    """The argv that runs Alertmanager. Debian's binary loads its default template from ``DEBIAN_AM_DATA``;
    when only unpacked into .tools (not installed), it runs in a mount namespace of its own where that
    directory is the unpacked one (nothing outside the process changes)."""
    assert ALERTMANAGER is not None
    unpacked = Path(ALERTMANAGER).parent.parent / "share" / "prometheus" / "alertmanager"
    if (DEBIAN_AM_DATA / "default.tmpl").exists() or not (unpacked / "default.tmpl").exists():
        return [ALERTMANAGER, *args]
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode:
        pytest.skip(f"Alertmanager is only unpacked (not installed: no {DEBIAN_AM_DATA}/default.tmpl) and this "
                    "machine does not allow the user+mount namespace that would stand in for it (unshare failed)")
    script = ('mount -t tmpfs tmpfs /usr/share && mkdir -p "$1" && mount --bind "$0" "$1" && shift 2 && exec "$@"')
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, str(unpacked),
            str(DEBIAN_AM_DATA), "--", ALERTMANAGER, *args]


def run(*argv: str | Path | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300)


def test_rules_use_only_metrics_strata_exports() -> None:
    """Every metric an expression reads is one Strata exports (or Prometheus' own ``up``)."""
    exported = {"up"}
    for family in Metrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        exported |= {family.name + s for s in suffixes}
    groups = yaml.safe_load((DEPLOY / "strata-rules.yml").read_text())["groups"]
    exprs = " ".join(r["expr"] for g in groups for r in g["rules"])
    used = set(re.findall(r"(?<![:\w])(strata_\w+|up)\b(?!:)", exprs))
    assert used - exported == set()
    assert {"strata_slo_objective", "strata_quality_score_sum", "strata_drift_detected"} <= used


@needs
def test_promtool_accepts_the_shipped_rules_and_config() -> None:
    for args in (("check", "rules", DEPLOY / "strata-rules.yml"), ("check", "config", DEPLOY / "prometheus.yml")):
        done = run(PROMTOOL, *args)
        assert done.returncode == 0, done.stdout + done.stderr


RULE_TESTS = [DEPLOY / "strata-rules.test.yml", DEPLOY / "strata-rules-long.test.yml"]  # minutes; days and weeks


@needs
def test_rules_unit_tests_pass_for_every_tier_and_burn_rate() -> None:
    cases = [case for f in RULE_TESTS for case in yaml.safe_load(f.read_text())["tests"]]
    tested = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t.get("exp_alerts")}
    rules = [r for g in yaml.safe_load((DEPLOY / "strata-rules.yml").read_text())["groups"] for r in g["rules"]]
    tiers = {r["alert"]: r["labels"]["tier"] for r in rules if "alert" in r}
    assert {tiers[a] for a in tested} == {"page", "ticket", "dashboard"}
    assert {a for a in tiers if "Availability" in a or "Fast" in a} <= tested  # each window pair, and latency's
    done = run(PROMTOOL, "test", "rules", *RULE_TESTS)
    assert done.returncode == 0 and done.stdout.count("SUCCESS") == 2, done.stdout + done.stderr


@needs
def test_alertmanager_config_is_valid_and_routes_each_tier_to_its_receiver() -> None:
    config = DEPLOY / "alertmanager.yml"
    done = run(AMTOOL, "check-config", config)
    assert done.returncode == 0, done.stdout + done.stderr
    for labels, receiver in ((("tier=page", "route=chat"), "page"), (("tier=ticket",), "ticket"),
                             (("tier=dashboard",), "dashboard"), (("alertname=Other",), "ticket")):
        done = run(AMTOOL, "config", "routes", "test", "--config.file", config, *labels)
        assert done.stdout.strip() == receiver, (labels, done.stdout, done.stderr)


# --- end to end ----------------------------------------------------------------------------------------------

@dataclass
class Stack:
    strata: StrataProcess
    upstream: FaultyUpstream
    receiver: WebhookReceiver
    prometheus: str
    alertmanager: str


def prometheus_copy(work: Path, strata_port: int, am_port: int) -> Path:
    """The shipped prometheus.yml and rules, scraping and evaluating every second, with ``for:`` 0s."""
    rules = re.sub(r"(?m)^(\s+for:) \S+$", r"\1 0s", (DEPLOY / "strata-rules.yml").read_text())
    (work / "strata-rules.yml").write_text(rules)
    cfg = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{am_port}"]
    cfg["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{strata_port}"]
    (work / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    return work / "prometheus.yml"


def alertmanager_copy(work: Path, receiver: WebhookReceiver) -> Path:
    """The shipped alertmanager.yml pointed at the test's receiver, grouping after 1s instead of 10-30s."""
    cfg = yaml.safe_load((DEPLOY / "alertmanager.yml").read_text())
    for r in cfg["receivers"]:
        for hook in r.get("webhook_configs", []):
            hook["url"] = f"{receiver.url}/{r['name']}"
    for route in [cfg["route"], *cfg["route"]["routes"]]:
        route.update({"group_wait": "1s", "group_interval": "1s"})
    (work / "alertmanager.yml").write_text(yaml.safe_dump(cfg))
    return work / "alertmanager.yml"


def started(argv: list[str], log: Path, ready_url: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited: {log.read_text()[-2000:]}")
        try:
            return httpx.get(ready_url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, 30, f"{Path(argv[0]).name} ready")
    return proc


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("alerting")
    am_port, prom_port = free_port(), free_port()
    with WebhookReceiver() as receiver, FaultyUpstream() as upstream:
        route = openai_route("chat", upstream.base_url, "ok")
        route |= {"retries": 0, "slo": {"availability": 0.995, "latency": {"threshold_ms": 5000}},
                  "breaker": {"consecutive_failures": 1000, "error_rate": 1.0, "caller_failures": 0}}
        config = {"routes": [route],
                  "alerts": {"webhook_url": f"http://127.0.0.1:{am_port}", "format": "alertmanager",
                             "group_interval": 0.5},
                  "abuse": {"auth_failures": 3, "auth_lockout": 1}}
        am = started(alertmanager(f"--config.file={alertmanager_copy(work, receiver)}",
                                  f"--storage.path={work / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
                                  "--cluster.listen-address="),
                     work / "alertmanager.log", f"http://127.0.0.1:{am_port}/-/ready")
        strata = StrataProcess(work / "strata", config).start()
        prom = started([str(PROMETHEUS), f"--config.file={prometheus_copy(work, strata.port, am_port)}",
                        f"--storage.tsdb.path={work / 'prom'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                       work / "prometheus.log", f"http://127.0.0.1:{prom_port}/-/ready")
        try:
            yield Stack(strata, upstream, receiver, f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}")
        finally:
            for proc in (prom, am):
                proc.terminate()
                proc.wait(30)
            strata.stop()


def chat(stack: Stack, n: int, failing: int) -> None:
    """``n`` chat requests, the first ``failing`` of them poisoned (the upstream answers 500; Strata 502)."""
    client = stack.strata.client()
    for i in range(n):
        text = f"{POISON} question {i}" if i < failing else f"question {i}"
        try:
            client.chat.completions.create(model="chat", messages=[{"role": "user", "content": text}])
        except Exception as exc:  # the poisoned ones, answered with the OpenAI error shape
            assert i < failing, exc


def received(stack: Stack, receiver: str) -> list[dict[str, Any]]:
    """Every alert Alertmanager POSTed to one receiver (``page`` or ``ticket``)."""
    return [a for body in stack.receiver.bodies(f"/{receiver}") for a in body["alerts"]]


def names(alerts: list[dict[str, Any]]) -> set[str]:
    return {a["labels"]["alertname"] for a in alerts}


@needs
def test_ten_percent_errors_page_and_a_dashboard_alert_does_not(stack: Stack) -> None:
    deadline = time.monotonic() + 75
    wanted = {"StrataHighErrorRate", "StrataAvailabilityBudgetBurnFast"}
    while not wanted <= names(received(stack, "page")):
        assert time.monotonic() < deadline, f"no page for {wanted - names(received(stack, 'page'))}: " \
                                            f"{stack.receiver.posts}"
        chat(stack, 10, failing=1)  # 10% of requests fail, batch after batch
        time.sleep(0.5)
    pages = [a for a in received(stack, "page") if a["labels"]["alertname"] in wanted]
    assert {(a["labels"]["route"], a["labels"]["tier"], a["status"]) for a in pages} == {("chat", "page", "firing")}
    burn = next(a for a in pages if a["labels"]["alertname"] == "StrataAvailabilityBudgetBurnFast")
    assert burn["labels"]["slo"] == "availability" and burn["labels"]["window"] == "1h/5m"

    # The failed upstream attempts fire a dashboard-tier alert: Alertmanager holds it, routed to the null
    # receiver; neither the page nor the ticket receiver ever got it.
    def dashboard_alert() -> list[dict[str, Any]]:
        alerts = httpx.get(f"{stack.alertmanager}/api/v2/alerts", timeout=5).json()
        return [a for a in alerts if a["labels"]["alertname"] == "StrataUpstreamAttemptsFailing"]

    [held] = wait_for(dashboard_alert, 20, "the dashboard-tier alert in Alertmanager")
    assert held["labels"]["tier"] == "dashboard" and [r["name"] for r in held["receivers"]] == ["dashboard"]
    firing = httpx.get(f"{stack.prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    assert any(a["labels"]["alertname"] == "StrataUpstreamAttemptsFailing" and a["state"] == "firing"
               for a in firing)
    time.sleep(2)  # two more group intervals of Alertmanager: it would have notified by now
    assert "StrataUpstreamAttemptsFailing" not in names(received(stack, "page")) | names(received(stack, "ticket"))


@needs
def test_strata_events_go_through_alertmanager_routing(stack: Stack) -> None:
    """An auth lockout (3 failed authentications here) is an operator event; Strata forwards it to Alertmanager,
    whose shipped routing sends its tier (ticket) to the ticket receiver. Last in the module: the lockout
    refuses this address for a second."""
    for _ in range(3):
        httpx.post(f"{stack.strata.url}/v1/chat/completions", headers={"Authorization": "Bearer sk-wrong"},
                   json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)

    def lockout() -> list[dict[str, Any]]:
        return [a for a in received(stack, "ticket") if a["labels"]["alertname"] == "StrataEventAuthLockout"]

    [alert] = wait_for(lockout, 30, "the auth_lockout event at the ticket receiver")[:1]
    assert alert["labels"]["kind"] == "auth_lockout" and alert["labels"]["tier"] == "ticket"
    assert alert["labels"]["subject"] == "127.0.0.1"
    assert "failed authentications" in alert["annotations"]["summary"]
    assert "StrataEventAuthLockout" not in names(received(stack, "page"))
    time.sleep(1.1)  # the lockout is over: the metric says it went out once
    assert stack.strata.metric("strata_alerts_forwarded_total", tier="ticket", outcome="sent") == 1
