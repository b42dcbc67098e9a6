"""``strata limits …`` and ``strata budgets …``: rate limits and spend caps on a running Strata.

They talk to its admin API (``--url``, ``--key``/``STRATA_ADMIN_KEY``); a change applies to every replica
within a second or so and lands in the audit trail (``strata limits changes``, ``strata budgets changes``).
"""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from strata.cli.common import JsonOpt, one_line_errors, print_json
from strata.cli.routes import KeyOpt, UrlOpt, call
from strata.errors import InvalidRequest

limits_app = typer.Typer(help="Rate limits: requests and tokens per minute.", no_args_is_help=True)
budgets_app = typer.Typer(help="Budgets: spend caps per key, team or tag value.", no_args_is_help=True)
ScopeOpt = Annotated[str, typer.Option(help="key, team, route or deployment (budgets: key, team or tag)")]
SubjectOpt = Annotated[str, typer.Option(help="Key id, team, route, or NAME=VALUE for a tag; * for each one")]


def _show(data: list[dict[str, Any]], columns: list[str], title: str) -> None:
    table = Table(*columns, "source", "updated by", title=title)
    for d in data:
        table.add_row(*("-" if d.get(c) is None else str(d.get(c)) for c in columns), d["source"],
                      d.get("updated_by") or "")
    Console().print(table)


@limits_app.command("set")
@one_line_errors
def limits_set(scope: ScopeOpt, subject: SubjectOpt = "*",
               rpm: Annotated[int | None, typer.Option(help="Requests per minute")] = None,
               tpm: Annotated[int | None, typer.Option(help="Tokens per minute")] = None,
               url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Add or replace a rate limit."""
    rule = call(url, key, "PUT", "/admin/limits", {"scope": scope, "subject": subject, "rpm": rpm, "tpm": tpm})
    typer.echo(f"limit set: {rule['scope']} {rule['subject']}: rpm {rule['rpm'] or '-'}, tpm {rule['tpm'] or '-'}")


@limits_app.command("list")
@one_line_errors
def limits_list(url: UrlOpt = None, key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Every rate limit in force (config file and run time)."""
    data = call(url, key, "GET", "/admin/limits")["data"]
    print_json(data) if as_json else _show(data, ["scope", "subject", "rpm", "tpm"], "rate limits")


@limits_app.command("remove")
@one_line_errors
def limits_remove(scope: ScopeOpt, subject: SubjectOpt = "*", url: UrlOpt = None,
                  key: KeyOpt = None) -> None:
    """Remove a run-time rate limit."""
    call(url, key, "DELETE", "/admin/limits?" + urllib.parse.urlencode({"scope": scope, "subject": subject}))
    typer.echo(f"limit removed: {scope} {subject}")


@limits_app.command("changes")
@one_line_errors
def limits_changes(url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Audit trail of rate-limit changes (JSON)."""
    print_json(call(url, key, "GET", "/admin/limits/changes")["data"])


@budgets_app.command("set")
@one_line_errors
def budgets_set(scope: ScopeOpt, subject: SubjectOpt,
                cap: Annotated[float, typer.Option(help="Cap in USD")],
                period: Annotated[str, typer.Option(help="day, month or total")] = "month",
                alerts: Annotated[str | None, typer.Option(help="Alert shares, e.g. 0.5,0.8,1")] = None,
                url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Add or replace a budget."""
    body: dict[str, Any] = {"scope": scope, "subject": subject, "period": period, "cap_usd": cap}
    if alerts:
        try:
            body["alerts"] = [float(a) for a in alerts.split(",") if a.strip()]
        except ValueError:
            raise InvalidRequest(f"--alerts takes shares separated by commas, e.g. 0.5,0.8,1, not {alerts!r}") from None
    rule = call(url, key, "PUT", "/admin/budgets", body)
    typer.echo(f"budget set: {rule['scope']} {rule['subject']}: ${rule['cap_usd']:g} per {rule['period']}")


@budgets_app.command("list")
@one_line_errors
def budgets_list(url: UrlOpt = None, key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Every budget in force, with spend so far this period for named subjects."""
    data = call(url, key, "GET", "/admin/budgets")["data"]
    print_json(data) if as_json else _show(data, ["scope", "subject", "period", "cap_usd", "spent_usd", "alerts"],
                                           "budgets")


@budgets_app.command("remove")
@one_line_errors
def budgets_remove(scope: ScopeOpt, subject: SubjectOpt,
                   period: Annotated[str, typer.Option(help="day, month or total")] = "month",
                   url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Remove a run-time budget."""
    q = urllib.parse.urlencode({"scope": scope, "subject": subject, "period": period})
    call(url, key, "DELETE", f"/admin/budgets?{q}")
    typer.echo(f"budget removed: {scope} {subject} ({period})")


@budgets_app.command("changes")
@one_line_errors
def budgets_changes(url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Audit trail of budget changes (JSON)."""
    print_json(call(url, key, "GET", "/admin/budgets/changes")["data"])
