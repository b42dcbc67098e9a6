"""``strata slo status``: each route's SLOs from the running gateway (``GET /admin/slo``): SLI over the SLO
window, error budget left and burn rates over 1h, 6h and 3d, computed from the ledger."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from strata.cli.common import JsonOpt, one_line_errors, print_json
from strata.cli.routes import KeyOpt, UrlOpt, call

app = typer.Typer(help="Service-level objectives per route.", no_args_is_help=True)


@app.command("status")
@one_line_errors
def status(route: Annotated[str | None, typer.Option(help="Only this route")] = None,
           url: UrlOpt = None, key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """SLI, error budget remaining and burn rates (1 = the budget lasts the window) per route and objective."""
    rows = call(url, key, "GET", "/admin/slo" + (f"?route={route}" if route else ""))["data"]
    if as_json:
        print_json(rows)
        return
    table = Table("route", "slo", "objective", "requests", "bad", "SLI", "budget left", "burn 1h", "burn 6h",
                  "burn 3d", title="SLOs (routes with an slo: in their config)")
    for r in rows:
        for o in r["objectives"]:
            what = o["slo"] + (f" < {o['threshold_ms']:g} ms" if "threshold_ms" in o else "")
            table.add_row(r["route"], what, f"{o['objective']:.2%} / {r['window']}", str(o["requests"]),
                          str(o["bad"]), _pct(o["sli"]), _pct(o["budget_remaining"]),
                          *(_burn(o["burn_rates"][w]) for w in ("1h", "6h", "3d")))
    Console().print(table)


def _pct(x: Any) -> str:
    return "-" if x is None else f"{x:.2%}"


def _burn(x: Any) -> str:
    if x is None:
        return "-"
    return f"[bold red]{x:.1f}x[/]" if x >= 14.4 else f"{x:.1f}x"
