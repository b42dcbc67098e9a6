"""``/metrics`` follows the Prometheus naming conventions, scraped from a real gateway after real traffic.

https://prometheus.io/docs/practices/naming/: counters end in ``_total``, units are in the name and in base
units, a share is a ``_ratio`` from 0 to 1, never a percentage. prometheus_client also adds a ``_created``
series to every counter and histogram, which doubles the series count and no dashboard reads: Strata drops it.
The checks run on the text a scraper gets, in Python always and with ``promtool check metrics`` when installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import StrataProcess, wait_for
from tests.upstreams import FaultyUpstream

PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
BASE_UNITS = ("seconds", "bytes", "tokens", "usd", "ratio")
# Histograms of a dimensionless value that is not a share of anything: the unit is left out, as Prometheus
# advises for unitless values (the quality score is 0..1 per answer; `_ratio` would read as a share of requests).
DIMENSIONLESS = {"strata_quality_score"}
NON_BASE_UNITS = re.compile(r"_((milli|micro|nano|kilo|mega|giga)[a-z]+|secs?|ms|us|ns|minutes?|hours?|days?|kb|mb|gb|"
                            r"percent|percentage|pct)(_|$)")


@pytest.fixture(scope="module")
def exposition(upstream: FaultyUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``/metrics`` of a gateway whose route has a 25% canary, after plain, streamed and failed requests."""
    deployments = [
        {"name": "stable", "engine": {"type": "openai", "base_url": upstream.base_url, "model": "ok"}, "price": PRICE},
        {"name": "next", "role": "canary", "traffic": 25, "price": PRICE,
         "engine": {"type": "openai", "base_url": upstream.base_url, "model": "ok"}},
    ]
    config = {"routes": [{"name": "m", "deployments": deployments, "canary": {"interval": 0.1}}]}
    proc = StrataProcess(tmp_path_factory.mktemp("metrics-strata"), config).start(ready_timeout=60)
    try:
        client = proc.client()
        for i in range(6):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"hi {i}"}])
        for _ in client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True):
            pass
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="no-such-route", messages=[{"role": "user", "content": "hi"}])
        wait_for(lambda: proc.metric("strata_canary_traffic_ratio", route="m", deployment="next") is not None
                 and proc.metric("strata_engine_restarts_total", deployment="stable") is not None,
                 10, "the monitor loops to publish the canary share and engine restarts")
        yield httpx.get(proc.url + "/metrics", timeout=10).text
    finally:
        proc.stop()


def types(text: str) -> dict[str, str]:
    """Exposed metric name -> type, from the ``# TYPE`` lines a scraper reads."""
    return dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE "))


def test_counters_end_in_total_and_no_created_series_is_exported(exposition: str) -> None:
    counters = [name for name, kind in types(exposition).items() if kind == "counter"]
    assert "strata_requests_total" in counters and "strata_engine_restarts_total" in counters
    assert [name for name in counters if not name.endswith("_total")] == []
    samples = [s.name for family in text_string_to_metric_families(exposition) for s in family.samples]
    assert "strata_request_duration_seconds_count" in samples  # histograms were exported (with samples)
    assert [name for name in samples if name.endswith("_created")] == []


def test_gauges_are_not_named_like_counters(exposition: str) -> None:
    gauges = [name for name, kind in types(exposition).items() if kind == "gauge"]
    assert "strata_requests_in_flight" in gauges
    assert [name for name in gauges if name.endswith(("_total", "_count", "_sum", "_bucket", "_created"))] == []


def test_units_are_in_the_name_and_in_base_units(exposition: str) -> None:
    kinds = types(exposition)
    assert [name for name in kinds if NON_BASE_UNITS.search(name)] == []
    histograms = [name for name, kind in kinds.items() if kind == "histogram"]
    assert "strata_time_to_first_token_seconds" in histograms
    assert [name for name in histograms if not name.endswith(BASE_UNITS) and name not in DIMENSIONLESS] == []


def test_the_canary_share_is_a_ratio(exposition: str) -> None:
    """``traffic: 25`` in the config (a percentage) is exported as 0.25."""
    shares = {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(exposition)
              for s in family.samples if s.name == "strata_canary_traffic_ratio"}
    assert shares == {(("deployment", "next"), ("route", "m")): 0.25}


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (Debian: apt-get install prometheus; .ci/run installs it)")
def test_promtool_finds_no_problem(exposition: str) -> None:
    done = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
