"""What metrics cost: per request (what ``pipeline.account`` records) and per OTLP export interval.

Per request, in µs, median and minimum of interleaved rounds (on a shared machine the minimum is the
better estimate of the cost itself, the median includes waiting for the CPU):
  prometheus       the series ``account`` recorded before the GenAI work (duration, tokens, cost, requests)
  + request_tokens the same plus ``strata_request_tokens`` (two observations on cached children): shipped
  + otel sdk       the same plus the GenAI instruments recorded with the OpenTelemetry metrics SDK instead
                   (request duration and token usage histograms with their attribute dicts; an in-memory
                   reader, so nothing is exported: the recording alone)
Per export: collect the registry and encode one ExportMetricsServiceRequest (``observe.metrics_export``)
for a gateway with R routes x 2 deployments x 3 teams that has served traffic.

    python bench/metrics_cost.py [--rounds 7] [--n 20000] [--routes 20]

The SDK is optional (not a Strata dependency): ``pip install --target /tmp/otelsdk opentelemetry-sdk`` and
``PYTHONPATH=/tmp/otelsdk``; without it that line is skipped.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from strata.observe.metrics import Metrics
from strata.observe.metrics_export import export_request


def prometheus(m: Metrics) -> Callable[[int], None]:
    def record(i: int) -> None:
        m.in_flight.labels("chat").dec()
        m.duration.labels("chat", "d1").observe(0.05 + (i % 7) * 0.01)
        m.input_tokens.labels("chat", "d1", "team-a").inc(40)
        m.output_tokens.labels("chat", "d1", "team-a").inc(120)
        m.cost.labels("chat", "d1", "team-a").inc(0.0002)
        m.requests.labels("chat", "d1", "team-a", "200").inc()

    return record


def with_request_tokens(m: Metrics) -> Callable[[int], None]:
    base = prometheus(m)

    def record(i: int) -> None:
        base(i)
        per_input, per_output = m.token_usage("chat", "d1", "chat")
        per_input.observe(40)
        per_output.observe(120)

    return record


def with_otel_sdk(m: Metrics) -> Callable[[int], None] | None:
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    except ImportError:
        return None
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("strata")
    duration = meter.create_histogram("gen_ai.server.request.duration", unit="s")
    tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
    base = prometheus(m)

    def record(i: int) -> None:
        base(i)
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "chat", "gen_ai.response.model": "m",
                 "gen_ai.provider.name": "openai"}
        duration.record(0.05 + (i % 7) * 0.01, attrs)
        tokens.record(40, {**attrs, "gen_ai.token.type": "input"})
        tokens.record(120, {**attrs, "gen_ai.token.type": "output"})

    return record


def per_request(rounds: int, n: int) -> None:
    variants: dict[str, Callable[[int], None]] = {"prometheus": prometheus(Metrics()),
                                                  "+ request_tokens": with_request_tokens(Metrics())}
    if (sdk := with_otel_sdk(Metrics())) is not None:
        variants["+ otel sdk"] = sdk
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, record in variants.items():
            t0 = time.perf_counter()
            for i in range(n):
                record(i)
            times[name].append((time.perf_counter() - t0) / n * 1e6)
    base, low = statistics.median(times["prometheus"]), min(times["prometheus"])
    print(f"{'per request':<18} {'µs median':>10} {'added':>8} {'µs min':>8} {'added':>8}")
    for name, ts in times.items():
        med, best = statistics.median(ts), min(ts)
        print(f"{name:<18} {med:>10.2f} {med - base:>8.2f} {best:>8.2f} {best - low:>8.2f}")


def per_export(routes: int, rounds: int) -> None:
    m = Metrics()
    for r in range(routes):
        for d in range(2):
            route, dep = f"route-{r}", f"route-{r}-d{d}"
            for t in range(3):
                for status in ("200", "500"):
                    m.requests.labels(route, dep, f"team-{t}", status).inc()
                m.cost.labels(route, dep, f"team-{t}").inc(0.01)
                m.input_tokens.labels(route, dep, f"team-{t}").inc(10)
                m.output_tokens.labels(route, dep, f"team-{t}").inc(10)
            m.duration.labels(route, dep).observe(0.2)
            m.ttft.labels(route, dep).observe(0.05)
            m.itl.labels(route, dep).observe(0.01)
            for child in m.token_usage(route, dep, "chat"):
                child.observe(100)
    series = sum(len(f.samples) for f in m.registry.collect())
    took, size = [], 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        body = export_request([f for f in m.registry.collect() if f.name.startswith("strata_")],
                              {"service.name": "strata"}, {})
        took.append((time.perf_counter() - t0) * 1000)
        size = len(body)
    print(f"\nper export: {routes} routes, {series} Prometheus samples -> {size / 1024:.0f} KiB protobuf "
          f"(GenAI views included), collect + encode {statistics.median(took):.1f} ms (median of {rounds})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--routes", type=int, default=20)
    args = p.parse_args()
    per_request(args.rounds, args.n)
    per_export(args.routes, args.rounds)


if __name__ == "__main__":
    main()
