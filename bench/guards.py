"""The guard stage's cost: the gateway with guards off, with PII and secrets redaction on input, and with the
prompt-injection detector (rules only, and combined with the MiniLM classifier), side by side over the same
fixed upstream, rounds interleaved (reversed every other round).

    python bench/guards.py --rounds 3 --duration 10 --json-out bench/results/guards.json

Every request carries the same ~900-character user message with an email, a phone number, a card number and
an ``sk-`` key in it (``PROMPT`` below), so the redacting rules find and replace four values per request
(the upstream gets the redacted text) and the injection detector scores a realistic text; the injection
rules use ``action: flag`` (the prompt is benign; a block would measure the refusal instead).

Targets (``--targets``): ``guards-off`` (no rules), ``pii-secrets`` (``pii`` and ``secrets``, ``redact``,
input), ``injection-rules`` (``injection``, ``mode: heuristics``: no embedding), ``injection`` (the default
``combined`` mode: one MiniLM embedding per request through the ``minilm`` route, sentence-transformers on one
thread, in the gateway's process tree; concurrency 1 only, see ``C1_ONLY``). Only ``injection``'s config has
the ``minilm`` route.
Figures are medians over rounds; "added" figures are medians of the per-round differences to ``guards-off``
(each round shares its own noise). The gateway runs from a git worktree of ``--rev`` (default HEAD), so
edits others make to the working tree during a run change nothing. Needs wrk. Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import urllib.request
from dataclasses import asdict
from pathlib import Path

from gateways import BENCH, STRATA_CONFIG, STRATA_KEY, Target, cpu_model, direct_target, fixed_upstream, free_port
from overhead_load import WARMUP_S, Row, cpu_s, measure, result_row, run_wrk
from redesign import gateway, mid, with_round, worktree

REPO = BENCH.parent
PROMPT = (
    "Hi support team, I'm writing about my order from last week. My name is Dana Whitfield and you can reach "
    "me at dana.whitfield@example.com or on +1 415 555 0143 during business hours. I was charged twice for "
    "the annual plan: the card ending in the number 4111 1111 1111 1111 shows two payments of $249.00 on "
    "2024-05-02. Could you refund one of them? Also, our developer pasted our API key into the last ticket by "
    "mistake (sk-proj-Xa81kQz7LmP2vR9tYb4NcE6uWd3HfJ0gSo5iKp), please make sure it is not stored anywhere. "
    "For context, we run version 3.2.1 of your SDK on Python 3.11 and the error started after the upgrade on "
    "Tuesday. The request id of the failing call was 550e8400-e29b-41d4-a716-446655440000. Thanks a lot for "
    "looking into this, and sorry for the long message. Best regards, Dana"
)
RULE = "  - {{{{detector: {d}, where: input, action: {a}{o}}}}}\n"  # braces doubled for the template
PII_SECRETS = STRATA_CONFIG + "guards:\n  rules:\n" + RULE.format(d="pii", a="redact", o="") + RULE.format(
    d="secrets", a="redact", o="")
INJECTION_RULES = STRATA_CONFIG + "guards:\n  rules:\n" + RULE.format(
    d="injection", a="flag", o=", options: {{mode: heuristics}}")
MINILM_ROUTE = ("  - name: minilm\n    deployments:\n      - name: minilm-local\n"
                "        engine: {{type: sentence-transformers, threads: 1}}\n")
INJECTION = (STRATA_CONFIG + MINILM_ROUTE + "guards:\n  embeddings_route: minilm\n  rules:\n"
             + RULE.format(d="injection", a="flag", o=""))
TARGETS = {"guards-off": STRATA_CONFIG, "pii-secrets": PII_SECRETS, "injection-rules": INJECTION_RULES,
           "injection": INJECTION}
BASE = "guards-off"
# One MiniLM embedding per request on one thread costs ~0.1 s of CPU here: at c=16 it would only measure
# the embedding queue, and load the shared 2-core machine for the whole run. Concurrency 1 only.
C1_ONLY = {"injection"}


def measure_c1(target: Target, duration_s: int) -> list[Row]:
    """``overhead_load.measure`` at concurrency 1 only."""
    run_wrk(target, 1, 1, WARMUP_S)
    before = cpu_s(target.proc.pid) if target.proc is not None else 0.0
    return [result_row(target, 1, run_wrk(target, 1, 1, duration_s), before)]


def paired(rows: list[Row], name: str, conns: int, field: str) -> float | None:
    """The median over rounds of name's ``field`` minus guards-off's in the same round."""
    by = {(r.target, r.round): getattr(r, field) for r in rows if r.concurrency == conns and r.failure is None
          and getattr(r, field) is not None}
    diffs = [by[(name, k)] - by[(BASE, k)] for (t, k) in by if t == name and (BASE, k) in by]
    return statistics.median(diffs) if diffs else None


def paired_ratio(rows: list[Row], name: str, conns: int = 16) -> float | None:
    by = {(r.target, r.round): r.rps for r in rows if r.concurrency == conns and r.failure is None and r.rps}
    ratios = [by[(name, k)] / by[(BASE, k)] for (t, k) in by if t == name and (BASE, k) in by]
    return statistics.median(ratios) if ratios else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", default="HEAD", help="git commit of the gateway to run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run")
    ap.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of {','.join(TARGETS)}")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    args.rev = git("rev-parse", "--short", f"{args.rev}^{{commit}}")
    names = args.targets.split(",")
    rows: list[Row] = []
    findings: dict[str, list[str]] = {}
    load = {"start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="strata-guards-") as t, worktree(args.rev) as tree:
        tmp = Path(t)
        body = tmp / "body.json"
        body.write_text(json.dumps({"model": "fixed", "messages": [{"role": "user", "content": PROMPT}],
                                    "max_tokens": 16}))
        with fixed_upstream(tmp) as up_port:
            for k in range(args.rounds):
                print(f"== round {k + 1}: direct", flush=True)
                direct = direct_target(up_port)
                direct.body_file = body
                rows += with_round(measure(direct, args.duration), k)
                for name in names if k % 2 == 0 else reversed(names):
                    print(f"== round {k + 1}: {name}", flush=True)
                    with gateway(name, TARGETS[name], tmp, up_port, free_port(), tree / "src") as target:
                        target.body_file = body
                        load_fn = measure_c1 if name in C1_ONLY else measure
                        rows += with_round(load_fn(target, args.duration), k)
                        findings[f"{name} round {k}"] = guard_findings(target.base_url)
    load["end"] = os.getloadavg()
    report(rows, ["direct", *names], args, {"load_avg": load, "prompt_chars": len(PROMPT),
                                                     "guard_findings_metric": findings})


def report(rows: list[Row], names: list[str], args: argparse.Namespace, extra: dict[str, object]) -> None:
    print("\n| target | p50 ms c=1 | p99 ms c=1 | added p50 ms c=1 | added p99 ms c=1 | CPU µs/req c=1 "
          "| rps c=16 | rps c=16 / off | p99 ms c=16 | CPU µs/req c=16 | added CPU µs/req c=16 | RSS MiB |")
    print("|---|" + "---:|" * 11)
    summary: dict[str, dict[str, float | None]] = {}
    for n in names:
        guarded = n not in ("direct", BASE)
        cells = {
            "p50_ms_c1": mid(rows, n, 1, "p50_ms"), "p99_ms_c1": mid(rows, n, 1, "p99_ms"),
            "added_p50_ms_c1": paired(rows, n, 1, "p50_ms") if guarded else None,
            "added_p99_ms_c1": paired(rows, n, 1, "p99_ms") if guarded else None,
            "cpu_us_c1": mid(rows, n, 1, "cpu_us"), "rps_c16": mid(rows, n, 16, "rps"),
            "rps_c16_over_off": paired_ratio(rows, n) if guarded else None,
            "p99_ms_c16": mid(rows, n, 16, "p99_ms"), "cpu_us_c16": mid(rows, n, 16, "cpu_us"),
            "added_cpu_us_c16": paired(rows, n, 16, "cpu_us") if guarded else None,
            "rss_mb": mid(rows, n, 16, "rss_mb"),
        }
        summary[n] = cells
        print(f"| {n} | " + " | ".join("-" if c is None else f"{c:,.3f}" if abs(c) < 100 else f"{c:,.0f}"
                                       for c in cells.values()) + " |")
    errors = {f"{r.target} c={r.concurrency} round {r.round}": r.errors for r in rows if r.errors}
    if errors:
        print(f"\nerrors: {errors}")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "cpu": cpu_model()}
        args.json_out.write_text(json.dumps({"machine": machine, "rev": args.rev, "rounds": args.rounds,
                                             "duration_s": args.duration, **extra, "summary": summary,
                                             "rows": [asdict(r) for r in rows]}, indent=2, default=str))


def guard_findings(base_url: str) -> list[str]:
    """The gateway's ``strata_guard_findings_total`` lines: evidence the rules ran on the measured requests."""
    req = urllib.request.Request(base_url + "/metrics", headers={"Authorization": f"Bearer {STRATA_KEY}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    return [line for line in text.splitlines() if line.startswith("strata_guard_findings_total")]


def git(*argv: str) -> str:
    out = subprocess.run(["git", "-C", str(REPO), *argv], capture_output=True, text=True, check=True)
    return out.stdout.strip()


if __name__ == "__main__":
    main()
