"""``strata usage``: cost and tokens grouped by team, key, route, … or any tag."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from strata.cli.common import ConfigOpt, DataDirOpt, JsonOpt, check_report, one_line_errors, print_json
from strata.cli.runtime import open_data
from strata.observe.usage import usage_report


@one_line_errors
def usage(
    by: Annotated[str, typer.Option(help="team, key, route, deployment, model, user, endpoint or tag:NAME")] = "team",
    since: Annotated[str, typer.Option(help="Window: 30m, 24h, 7d, …")] = "7d",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show usage and cost from the ledger."""
    check_report(by, since)
    report = usage_report(open_data(config, data_dir)[1], by, since)
    if as_json:
        print_json(report)
        return
    table = Table(by, "requests", "errors", "prompt tokens", "completion tokens", "cost (USD)",
                  title=f"Usage by {by}, last {since}")
    for g in [*report["groups"], {"group": "TOTAL", **report["totals"]}]:
        table.add_row(str(g["group"]) if g["group"] is not None else "(none)", str(g["requests"]),
                      str(g["errors"]), str(g["prompt_tokens"]), str(g["completion_tokens"]),
                      f"{g['cost_usd']:.6f}")
    Console().print(table)
