"""``strata evals run|list|show|compare``: run a suite through a running gateway (progress bar, resumable with
``--run-id``), and read recorded runs from the database (JSON and CSV export)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from strata.cli.common import ConfigOpt, DataDirOpt, JsonOpt, one_line_errors, print_json
from strata.cli.routes import KeyOpt, UrlOpt
from strata.cli.runtime import open_data, server_url
from strata.errors import AuthenticationFailed
from strata.evals import service
from strata.evals.client import Gateway
from strata.evals.runner import Suite, load_suite, new_run_id, run_suite
from strata.evals.store import EvalStore
from strata.observe.audit import cli_actor

app = typer.Typer(help="Run evaluation suites through the gateway and compare runs.", no_args_is_help=True)


def _summary_table(run: dict[str, Any]) -> Table:
    s = run["summary"] or {}
    table = Table("metric", "mean", "pass rate", "n", title=f"run {run['id']} ({run['suite']} → {run['target']}, "
                  f"{run['status']})")
    for name, m in (s.get("metrics") or {}).items():
        table.add_row(name, str(m["mean"]), str(m["pass_rate"]), str(m["n"]))
    table.add_row("passed (all scorers)", "", str(s.get("pass_rate")), str(s.get("cases")))
    lat = s.get("latency_s") or {}
    table.add_row("latency_s", str(lat.get("mean")), f"p50 {lat.get('p50')}", "")
    table.add_row("cost_usd (total)", str(s.get("cost_usd")), "", "")
    return table


async def _run(suite: Suite, base: str, key: str, run_id: str, target: str, baseline: str | None,
               store: EvalStore, quiet: bool) -> dict[str, Any]:
    gateway = Gateway(base, key, run_id, suite.config.timeout)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), disable=quiet) as bar:
        task = bar.add_task(f"{suite.config.name} → {target}", total=len(suite.cases))

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            return await run_suite(suite, gateway, store, target, cli_actor(), baseline, progress)
        finally:
            await gateway.close()


@app.command("run")
@one_line_errors
def run(
    suite: Annotated[str, typer.Argument(help="A suite YAML file, or the name of one in evals.suites")],
    target: Annotated[str, typer.Option(help="ROUTE, deployment:NAME or registry:NAME@ALIAS|N")],
    run_id: Annotated[str | None, typer.Option(help="Resume this run (cases already scored are skipped)")] = None,
    baseline: Annotated[str | None, typer.Option(help="A run to compare with (and for pairwise scorers)")] = None,
    url: UrlOpt = None,
    key: KeyOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a suite against a target through the gateway; results are stored case by case."""
    if not key:
        raise AuthenticationFailed("no key: set STRATA_ADMIN_KEY (or pass --key); a registry or deployment target "
                                   "needs an admin or operator key (it makes a staging route)")
    settings, db = open_data(config, data_dir)
    loaded = load_suite(suite, settings, db)
    store = EvalStore(db)
    done = asyncio.run(_run(loaded, server_url(url), key, run_id or new_run_id(), target, baseline, store,
                            as_json))
    if as_json:
        print_json(done)
        return
    Console().print(_summary_table(done))
    if baseline:
        _print_compare(service.compare(store, done["id"], baseline))


@app.command("list")
@one_line_errors
def list_runs(
    suite: Annotated[str | None, typer.Option(help="Only runs of this suite")] = None,
    target: Annotated[str | None, typer.Option(help="Only runs against this target (as recorded)")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Recorded eval runs, newest first."""
    data = EvalStore(open_data(config, data_dir)[1]).runs(suite, target)
    if as_json:
        print_json(data)
        return
    table = Table("run", "suite", "target", "status", "cases", "pass rate", "created", title="eval runs")
    for r in data:
        table.add_row(r["id"], r["suite"], r["target"], r["status"], str(r["cases"]),
                      str((r["summary"] or {}).get("pass_rate")), str(r["created_at"])[:19])
    Console().print(table)


@app.command("show")
@one_line_errors
def show(
    run_id: Annotated[str, typer.Argument(help="The run")],
    csv_file: Annotated[Path | None, typer.Option("--csv", help="Also write per-case results to this CSV file")]
    = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A run's summary and its per-case results (scores, why, latency, cost)."""
    view = service.show(EvalStore(open_data(config, data_dir)[1]), run_id)
    if csv_file is not None:
        csv_file.write_text(service.to_csv(view["results"]), encoding="utf-8")
    if as_json:
        print_json(view)
        return
    Console().print(_summary_table(view))
    table = Table("case", "passed", "scores", "why", "latency_s", "cost_usd", title="cases")
    for r in view["results"]:
        scored = {k: v for k, v in r["scores"].items() if v is not None}  # a scorer without its reference: left out
        why = "; ".join(f"{k}: {r['details'][k]}" for k in scored if r["details"].get(k)) or (r["error"] or "")
        cost = f"{r['cost_usd']:.6f}" if r["cost_usd"] is not None else ""
        table.add_row(r["case_id"], str(r["passed"]), ", ".join(f"{k}={v:g}" for k, v in scored.items()),
                      why[:120], f"{r['latency_s']:.3f}", cost)
    Console().print(table)


def _print_compare(view: dict[str, Any]) -> None:
    table = Table("metric", "n", "candidate", "baseline", "test", "p (two-sided)", "p (worse)", "verdict",
                  title=f"{view['candidate']} vs baseline {view['baseline']} (confidence {view['confidence']})")
    for m in view["metrics"]:
        verdict = "WORSE" if m["worse"] else "better" if m["better"] else "no significant difference"
        table.add_row(m["metric"], str(m["n"]), str(m["candidate_mean"]), str(m["baseline_mean"]), m["test"],
                      f"{m['p_value']:.4g}", f"{m['p_worse']:.4g}", verdict)
    Console().print(table)


@app.command("compare")
@one_line_errors
def compare(
    candidate: Annotated[str, typer.Argument(help="The run under test")],
    baseline: Annotated[str, typer.Argument(help="The run to compare with")],
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999, help="One-sided confidence of 'worse'")] = 0.95,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Paired comparison per metric (McNemar exact for pass/fail, Wilcoxon signed-rank for scores)."""
    view = service.compare(EvalStore(open_data(config, data_dir)[1]), candidate, baseline, confidence)
    if as_json:
        print_json(view)
        return
    _print_compare(view)
