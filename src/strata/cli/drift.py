"""``strata drift report|baseline``: drift reports per route and their reference windows, from the running
gateway (``/admin/drift``)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console
from rich.table import Table

from strata.cli.common import JsonOpt, one_line_errors, print_json
from strata.cli.routes import KeyOpt, UrlOpt, call

app = typer.Typer(help="Drift of prompts, answers and retrieved chunks per route.", no_args_is_help=True)
baseline_app = typer.Typer(help="A route's registered reference window.", no_args_is_help=True)
app.add_typer(baseline_app, name="baseline")
RouteArg = Annotated[str, typer.Argument(help="The route")]


@app.command("report")
@one_line_errors
def report(route: Annotated[str | None, typer.Argument(help="One route (default: every watched route)")] = None,
           fresh: Annotated[bool, typer.Option(help="Compute it now instead of showing the last check's")] = False,
           deployment: Annotated[str | None, typer.Option(help="Only this deployment (model version): its own "
                                                          "drift, computed now (needs ROUTE)")] = None,
           url: UrlOpt = None, key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Each signal's effect size, p-value (Holm-corrected) and whether it is flagged."""
    if route is None:
        if deployment is not None:
            raise typer.BadParameter("--deployment needs a ROUTE")
        reports = call(url, key, "GET", "/admin/drift")["data"]
    else:
        query = "&".join(p for p in ("fresh=true" if fresh else "",
                                     f"deployment={quote(deployment)}" if deployment else "") if p)
        reports = [call(url, key, "GET", f"/admin/drift/{route}" + (f"?{query}" if query else ""))]
    if as_json:
        print_json(reports if route is None else reports[0])
        return
    console = Console()
    if not reports:
        console.print("no drift reports yet")
    for r in reports:
        console.print(_table(r))


def _table(r: dict[str, Any]) -> Table:
    ref, cur = r["reference"], r["current"]
    arms = ", ".join(f"{d} {n}" for d, n in (cur.get("deployments") or {}).items())
    who = f"{r['route']} deployment {r['deployment']}" if r.get("deployment") else r["route"]
    title = (f"{who}: {r['status']}  (reference {ref['kind']} n={ref['n']}, current n={cur['n']}"
             f"{f' ({arms})' if arms else ''}, alpha {r['alpha']:g}, {r['at'][:19]})")
    table = Table("signal", "test", "effect", "min effect", "p", "p (holm)", "n ref", "n cur", "drift", title=title)
    for s in r["signals"]:
        table.add_row(s["signal"], s["test"], f"{s['statistic']:.4g}", f"{s['min_effect']:g}", f"{s['p_value']:.3g}",
                      f"{s['p_adjusted']:.3g}", str(s["n_reference"]), str(s["n_current"]),
                      "[red]yes[/]" if s["detected"] else "no")
    for s in r["untested"]:
        table.add_row(s["signal"], "-", "-", "-", "-", "-", str(s["n_reference"]), str(s["n_current"]),
                      "[dim]too few[/]")
    return table


@baseline_app.command("set")
@one_line_errors
def baseline_set(route: RouteArg,
                 start: Annotated[str | None, typer.Option("--from", help="Start (ISO 8601; default: --to minus "
                                                            "drift.window)")] = None,
                 end: Annotated[str | None, typer.Option("--to", help="End (ISO 8601; default: now)")] = None,
                 url: UrlOpt = None, key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Snapshot a window of the route's traffic as its drift reference."""
    body = {k: v for k, v in (("from", start), ("to", end)) if v is not None}
    _show(call(url, key, "POST", f"/admin/drift/{route}/baseline", body), as_json)


@baseline_app.command("show")
@one_line_errors
def baseline_show(route: RouteArg, url: UrlOpt = None, key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """The route's registered baseline window and how many observations it holds."""
    _show(call(url, key, "GET", f"/admin/drift/{route}/baseline"), as_json)


@baseline_app.command("clear")
@one_line_errors
def baseline_clear(route: RouteArg, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Forget the baseline: the reference becomes the previous drift.reference_days again."""
    call(url, key, "DELETE", f"/admin/drift/{route}/baseline")
    Console().print(f"baseline of {route} cleared")


def _show(b: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(b)
        return
    Console().print(f"{b['route']}: baseline {b['from']} .. {b['to']} ({b['n']} observations, set by "
                    f"{b['actor'] or '-'})")
