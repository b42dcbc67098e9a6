"""``strata quality report|scores``: online quality per route and deployment over a window, and one request's
scores, from the running gateway (``GET /admin/quality``)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

import typer
from rich.console import Console
from rich.table import Table

from strata.cli.common import JsonOpt, one_line_errors, print_json
from strata.cli.routes import KeyOpt, UrlOpt, call

app = typer.Typer(help="Online quality scores of served answers.", no_args_is_help=True)


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


@app.command("report")
@one_line_errors
def report(route: Annotated[str | None, typer.Option(help="Only this route")] = None,
           window: Annotated[str, typer.Option(help="1h, 24h, 7d (any N with m, h or d)")] = "24h",
           url: UrlOpt = None, key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Mean score, n and confidence interval per route, deployment and scorer (sampled and feedback)."""
    query = urlencode({"window": window, **({"route": route} if route else {})})
    out = call(url, key, "GET", f"/admin/quality?{query}")
    if as_json:
        print_json(out)
        return
    table = Table("route", "deployment", "source", "scorer", "n", "mean", f"{out['confidence']:.0%} CI",
                  title=f"quality over the last {out['window']}")
    for g in out["data"]:
        table.add_row(g["route"], g["deployment"] or "-", g["source"], g["scorer"], str(g["n"]), _num(g["mean"]),
                      f"{_num(g['ci_low'])} .. {_num(g['ci_high'])}")
    Console().print(table)


@app.command("scores")
@one_line_errors
def scores(request_id: Annotated[str, typer.Argument(metavar="REQUEST_ID", help="The request's X-Request-Id")],
           url: UrlOpt = None, key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """One request's quality scores, with the deployment that served it."""
    out = call(url, key, "GET", f"/admin/quality/{request_id}")
    if as_json:
        print_json(out)
        return
    served = out["served"] or {}
    title = (f"request {request_id}  route {served.get('route', '-')}  deployment {served.get('deployment', '-')}  "
             f"status {served.get('status', '-')}")
    table = Table("at", "source", "scorer", "version", "value", "label", "rationale", title=title)
    for s in out["scores"]:
        table.add_row(s["at"][:19], s["source"], s["scorer"], s["scorer_version"] or "", f"{s['value']:.3f}",
                      s["label"] or "", (s["rationale"] or "")[:80])
    Console().print(table)
