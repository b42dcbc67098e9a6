"""``strata datasets create|list|show|diff|export`` and ``strata pipelines run|list|show``: versioned datasets
and the pipelines that derive them. They read and write the database and the dataset storage directly (like
``strata usage``), so they work with the gateway stopped; the ``embed`` step needs the gateway (its admin API)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from strata.cli.common import ConfigOpt, DataDirOpt, JsonOpt, one_line_errors, print_json
from strata.cli.runtime import data_settings
from strata.data.pipeline import RunResult, get_run, list_runs, load_spec
from strata.data.service import DataService
from strata.data.sources import LedgerFilter, format_of, write
from strata.data.store import DatasetVersion, parse_ref
from strata.errors import InvalidRequest
from strata.observe.usage import window_start
from strata.store.db import open_database

app = typer.Typer(help="Versioned datasets: create, list, show, diff, export.", no_args_is_help=True)
pipelines_app = typer.Typer(help="Pipelines: declared steps and quality checks that make dataset versions.",
                            no_args_is_help=True)
TeamOpt = Annotated[str, typer.Option("--team", help="The team the dataset belongs to")]


def _service(config: Path | None, data_dir: Path | None) -> DataService:
    settings = data_settings(config, data_dir)
    return DataService(open_database(settings.database_url), settings.data, settings.data_dir)


def _spinner() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}"),
                    TimeElapsedColumn(), console=Console(stderr=True), transient=True)


@app.command("create")
@one_line_errors
def create(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    path: Annotated[Path | None, typer.Argument(help="A .jsonl, .csv or .parquet file, or a folder of documents")]
    = None,
    fmt: Annotated[str | None, typer.Option("--format", help="jsonl, csv or parquet (default: by suffix)")] = None,
    id_field: Annotated[str, typer.Option(help="The field holding each record's id (none: the content hash)")]
    = "id",
    from_ledger: Annotated[bool, typer.Option("--from-ledger", help="Capture the team's requests from the ledger")]
    = False,
    route: Annotated[str | None, typer.Option(help="--from-ledger: only this route")] = None,
    since: Annotated[str | None, typer.Option(help="--from-ledger: only this window (24h, 7d)")] = None,
    status: Annotated[int | None, typer.Option(help="--from-ledger: only this HTTP status")] = None,
    description: Annotated[str | None, typer.Option(help="What the dataset is")] = None,
    team: TeamOpt = "default",
    config: ConfigOpt = None, data_dir: DataDirOpt = None, as_json: JsonOpt = False,
) -> None:
    """Add a version (a new dataset, or a new version of one); the same content as the newest is not added."""
    if from_ledger == (path is not None):
        raise InvalidRequest("give a PATH or --from-ledger")
    svc = _service(config, data_dir)
    with _spinner() as progress:
        progress.add_task(f"reading {path or 'the ledger'}", total=None)
        if path is not None:
            made = svc.create_from_path(team, name, path, fmt, id_field=id_field, description=description)
        else:
            flt = LedgerFilter(team, route, window_start(since) if since else None, status=status)
            made = svc.create_from_ledger(team, name, flt, description=description)
    if as_json:
        print_json({**made.version.view(), "created": made.created})
        return
    v = made.version
    what = "created" if made.created else "unchanged: same content as"
    typer.echo(f"{what} {v.ref}  {v.record_count} records  sha256:{v.content_hash}")


@app.command("list")
@one_line_errors
def list_(team: Annotated[str | None, typer.Option("--team", help="Only this team")] = None,
          config: ConfigOpt = None, data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Datasets, with their newest published version."""
    rows = _service(config, data_dir).store.list_datasets([team] if team else None)
    if as_json:
        print_json([r.view() for r in rows])
        return
    table = Table("team", "dataset", "versions", "latest", "content hash", title=f"{len(rows)} datasets")
    for r in rows:
        table.add_row(r.team, r.name, str(r.versions), str(r.latest or "-"), (r.latest_hash or "")[:16])
    Console().print(table)


@app.command("show")
@one_line_errors
def show(ref: Annotated[str, typer.Argument(help="NAME (its versions) or NAME@VERSION (number, latest, hash)")],
         records: Annotated[int, typer.Option(help="NAME@VERSION: print this many records")] = 0,
         team: TeamOpt = "default", config: ConfigOpt = None, data_dir: DataDirOpt = None,
         as_json: JsonOpt = False) -> None:
    """A dataset's versions, or one version (with its check report and, with --records, some records)."""
    svc = _service(config, data_dir)
    name, version = parse_ref(ref)
    if version is None:
        versions = svc.store.list_versions(team, name)
        if as_json:
            print_json([v.view() for v in versions])
            return
        table = Table("version", "status", "records", "content hash", "created", "source", title=name)
        for v in versions:
            table.add_row(str(v.number), v.status, str(v.record_count), v.content_hash[:16],
                          v.created_at.isoformat()[:19], _source(v))
        Console().print(table)
        return
    v = svc.store.get_version(team, name, version, include_rejected=True)
    shown = [{"id": r.id, "data": r.data} for _, r in zip(range(records), svc.store.iter_records(v), strict=False)]
    if as_json:
        print_json({**v.view(), "records": shown})
        return
    typer.echo(f"{v.ref}  {v.status}  {v.record_count} records  sha256:{v.content_hash}\n"
               f"created {v.created_at.isoformat()[:19]}  source {_source(v)}" +
               (f"  parent {v.parent}" if v.parent else ""))
    _print_checks(v.checks or [])
    for r in shown:
        typer.echo(f"  {r['id']}: {r['data']}")


@app.command("diff")
@one_line_errors
def diff(a: Annotated[str, typer.Argument(help="NAME@VERSION (the older)")],
         b: Annotated[str, typer.Argument(help="NAME@VERSION or VERSION (the newer)")],
         team: TeamOpt = "default", config: ConfigOpt = None, data_dir: DataDirOpt = None,
         as_json: JsonOpt = False) -> None:
    """Records added, removed and changed (same id, other content hash) between two versions."""
    svc = _service(config, data_dir)
    name_a, ver_a = parse_ref(a)
    name_b, ver_b = parse_ref(b) if "@" in b else (name_a, b)
    va = svc.store.get_version(team, name_a, ver_a, include_rejected=True)
    vb = svc.store.get_version(team, name_b, ver_b, include_rejected=True)
    d = svc.store.diff(va, vb)
    if as_json:
        print_json(d.view())
        return
    typer.echo(f"{d.a} -> {d.b}: {len(d.added)} added, {len(d.removed)} removed, {len(d.changed)} changed, "
               f"{d.unchanged} unchanged")
    for sign, ids in (("+", d.added), ("-", d.removed), ("~", d.changed)):
        for rid in ids:
            typer.echo(f"  {sign} {rid}")


@app.command("export")
@one_line_errors
def export(ref: Annotated[str, typer.Argument(help="NAME@VERSION (or NAME: the newest published)")],
           out: Annotated[Path, typer.Argument(help="File to write")],
           fmt: Annotated[str | None, typer.Option("--format", help="jsonl, csv or parquet (default: by suffix)")]
           = None,
           team: TeamOpt = "default", config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Write a version's records (their data, in stored order) to a file."""
    svc = _service(config, data_dir)
    name, version = parse_ref(ref)
    v = svc.store.get_version(team, name, version, include_rejected=version is not None)
    n = write(svc.store.iter_records(v), out, format_of(out, fmt))
    typer.echo(f"exported {n} records of {v.ref} to {out}", err=True)


@pipelines_app.command("run")
@one_line_errors
def run(spec: Annotated[Path, typer.Argument(help="Pipeline YAML (name, output, steps, checks)")],
        input_ref: Annotated[str, typer.Argument(metavar="INPUT", help="NAME or NAME@VERSION to run over")],
        team: TeamOpt = "default", config: ConfigOpt = None, data_dir: DataDirOpt = None,
        as_json: JsonOpt = False) -> None:
    """Run the steps and checks; exit 1 when a check fails (the version is kept as rejected)."""
    svc = _service(config, data_dir)
    pipeline = load_spec(spec)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("starting", total=len(pipeline.steps))

        def tick(what: str, done: int, total: int) -> None:
            progress.update(task, description=what, completed=done, total=total)

        result = svc.run_pipeline(team, pipeline, input_ref, progress=tick)
    if as_json:
        print_json(result.view())
    else:
        _print_run(result)
    if result.status != "published":
        raise typer.Exit(1)


@pipelines_app.command("list")
@one_line_errors
def list_runs_(team: Annotated[str | None, typer.Option("--team", help="Only this team")] = None,
               config: ConfigOpt = None, data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Pipeline runs, newest first."""
    rows = list_runs(_service(config, data_dir).store, [team] if team else None)
    if as_json:
        print_json(rows)
        return
    table = Table("run", "team", "pipeline", "status", "steps cached", "created", title=f"{len(rows)} runs")
    for r in rows:
        cached = sum(1 for s in r["steps"] if s["cached"])
        table.add_row(r["id"], r["team"], r["pipeline"], r["status"], f"{cached}/{len(r['steps'])}",
                      r["created_at"][:19])
    Console().print(table)


@pipelines_app.command("show")
@one_line_errors
def show_run(run_id: Annotated[str, typer.Argument(help="A run id (run_…)")],
             config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """One run: its spec, each step's version, params hash and cache hit, as JSON."""
    print_json(get_run(_service(config, data_dir).store, None, run_id))


def _print_run(r: RunResult) -> None:
    out = sys.stdout
    verb = "published" if r.status == "published" else "REJECTED"
    made = "" if r.created else " (unchanged: same content as the newest version)"
    out.write(f"{r.pipeline} on {r.input.ref}: {verb} {r.output.ref}{made}  {r.output.record_count} records  "
              f"sha256:{r.output.content_hash[:16]}  run {r.id}\n")
    for s in r.steps:
        out.write(f"  step {s.index + 1} {s.step}@{s.version}  {s.input_count} -> {s.output_count}"
                  f"{'  (cached)' if s.cached else ''}\n")
    _print_checks([c.view() for c in r.checks])


def _print_checks(checks: list[Any]) -> None:
    for c in checks:
        mark = "ok  " if c["passed"] else "FAIL"
        typer.echo(f"  {mark} {c['check']}" + (f"  {c['failed_count']} records" if not c["passed"] else ""))
        for f in c["failures"][:20]:
            typer.echo(f"       {f['id']}: {f['reason']}")


def _source(v: DatasetVersion) -> str:
    s = v.source
    return str(s.get("kind")) + (f" {s['path']}" if s.get("path") else "") + (
        f" {s['pipeline']}({s['input']})" if s.get("pipeline") else "")
