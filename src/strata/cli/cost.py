"""``strata cost report``: spend by team, key, route, model or tag, with shares, cache savings,
week-over-week change and the few groups that drive most of the cost."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from strata.cli.common import ConfigOpt, DataDirOpt, JsonOpt, check_report, one_line_errors, print_json
from strata.cli.runtime import open_data
from strata.observe.costs import cost_report, to_csv

app = typer.Typer(help="Cost reports from the ledger.", no_args_is_help=True)


@app.command("report")
@one_line_errors
def report(
    by: Annotated[str, typer.Option(help="team, key, route, deployment, model, user, endpoint or tag:NAME")] = "team",
    since: Annotated[str, typer.Option(help="Window: 24h, 7d, 30d, …")] = "30d",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV")] = False,
) -> None:
    """Spend, share, cache savings and week-over-week change per group; the top cost drivers first."""
    check_report(by, since)
    data = cost_report(open_data(config, data_dir)[1], by, since)
    if as_json:
        print_json(data)
        return
    if as_csv:
        sys.stdout.write(to_csv(data))
        return
    t = data["totals"]
    table = Table(by, "requests", "cost (USD)", "share", "saved by cache", "this week", "last week", "WoW",
                  title=f"Cost by {by}, last {since}: ${t['cost_usd']:.4f}"
                  + (f", {t['wow_change_pct']:+.0f}% week over week" if t["wow_change_pct"] is not None else ""))
    for g in data["groups"]:
        name = "(none)" if g["group"] is None else str(g["group"])
        table.add_row(f"[bold]{name}[/]" if g["driver"] else name, str(g["requests"]), f"{g['cost_usd']:.6f}",
                      f"{g['share']:.1%}", f"{g['saved_usd']:.6f}", f"{g['this_week_usd']:.6f}",
                      f"{g['last_week_usd']:.6f}",
                      "-" if g["wow_change_pct"] is None else f"{g['wow_change_pct']:+.0f}%")
    Console().print(table)
    d = data["drivers"]
    Console().print(f"top cost drivers (bold): {d['groups']} of {d['of']} groups make {d['share']:.0%} of spend",
                    highlight=False)
