"""``strata traces list|show``: recent request traces and one trace's span tree, from the running gateway's
trace store (``GET /admin/traces``), with no collector needed."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from strata.cli.common import JsonOpt, one_line_errors, print_json
from strata.cli.routes import KeyOpt, UrlOpt, call

app = typer.Typer(help="Recent request traces and their span trees.", no_args_is_help=True)
STATUS = {0: "", 1: "ok", 2: "error"}  # OTLP status codes
SHOWN = ("strata.deployment", "strata.attempt", "strata.outcome", "strata.cache", "strata.role",
         "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "http.response.status_code", "error.type")


@app.command("list")
@one_line_errors
def list_(route: Annotated[str | None, typer.Option(help="Only this route")] = None,
          status: Annotated[int | None, typer.Option(help="Only this HTTP status")] = None,
          limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many")] = 20,
          url: UrlOpt = None, key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """The newest traces, newest first."""
    query = f"?limit={limit}" + (f"&route={route}" if route else "") + (f"&status={status}" if status else "")
    rows = call(url, key, "GET", f"/admin/traces{query}")["data"]
    if as_json:
        print_json(rows)
        return
    table = Table("started", "request id", "trace id", "name", "status", "ms", title=f"{len(rows)} traces")
    for r in rows:
        table.add_row(r["started_at"][:23], r["request_id"], r["trace_id"], r["name"], str(r["status"] or ""),
                      f"{r['duration_ms']:.1f}")
    Console().print(table)


@app.command("show")
@one_line_errors
def show(ident: Annotated[str, typer.Argument(metavar="ID", help="A trace id (32 hex) or a request id")],
         url: UrlOpt = None, key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """One trace as a tree of spans: each with its start offset, duration, status and key attributes."""
    trace = call(url, key, "GET", f"/admin/traces/{ident}")
    if as_json:
        print_json(trace)
        return
    title = (f"trace {trace['trace_id']}  request {', '.join(trace['requests'])}  "
             f"{trace['duration_ms']:.1f} ms  status {trace['status']}")
    tree = Tree(title)
    for node in trace["tree"]:
        _add(tree, node)
    Console().print(tree)


def _add(parent: Tree, node: dict[str, Any]) -> None:
    duration = node["duration_ms"]
    status = STATUS.get(node["status"], str(node["status"]))
    mark = f" [red]{status}: {node['message'] or ''}[/]" if node["status"] == 2 else ""
    attrs = " ".join(f"{k.rsplit('.', 1)[-1]}={node['attributes'][k]}" for k in SHOWN if k in node["attributes"])
    label = (f"[bold]{node['name']}[/]  +{node['offset_ms']:.2f} ms  "
             f"{'-' if duration is None else f'{duration:.2f} ms'}{mark}  [dim]{attrs}[/]")
    branch = parent.add(label)
    for child in node["children"]:
        _add(branch, child)
