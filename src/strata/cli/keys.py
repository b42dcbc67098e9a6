"""``strata keys create|list|revoke``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from strata.cli.common import ConfigOpt, DataDirOpt, JsonOpt, one_line_errors, print_json
from strata.cli.runtime import open_data
from strata.errors import InvalidRequest
from strata.gateway.admin import key_view
from strata.governance.keys import KeyStore, check_routes
from strata.governance.roles import Scopes
from strata.observe.audit import audit_log, cli_actor

app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


def _store(config: ConfigOpt, data_dir: DataDirOpt) -> KeyStore:
    return KeyStore(open_data(config, data_dir)[1])


@app.command("create")
@one_line_errors
def create(
    name: Annotated[str, typer.Argument(help="A label for the key, e.g. the service using it")],
    team: Annotated[str, typer.Option(help="Team the key's usage is attributed to")] = "default",
    route: Annotated[list[str] | None, typer.Option("--route", help="Allowed route (repeat); default: all")] = None,
    expires_in_days: Annotated[float | None, typer.Option(help="Expire after this many days")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Role admin (the same as --role admin)")] = False,
    role: Annotated[str | None, typer.Option(help="admin, operator, analyst or member (default: member)")] = None,
    scope: Annotated[list[str] | None, typer.Option(
        "--scope", help="Confine the key: team:NAME or route:NAME (repeat)")] = None,
    max_concurrency: Annotated[int | None, typer.Option(
        min=1, help="Requests in flight at once (per replica); one more gets 429")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key. Its secret is printed once and never stored."""
    expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days is not None else None
    settings, db = open_data(config, data_dir)
    check_routes(route, [r.name for r in settings.routes])
    if admin and role not in (None, "admin"):
        raise InvalidRequest(f"--admin contradicts --role {role}", param="role")
    scopes = Scopes.parse(scope or ())
    check_routes(sorted(scopes.routes or ()), [r.name for r in settings.routes])
    audit = audit_log(settings, db)
    audit.check_writable()
    created = KeyStore(db).create(name, team, route or None, expires, admin, role=role, scopes=scopes,
                                  max_concurrency=max_concurrency)
    audit.append(cli_actor(), "key.create", created.principal.key_id, key_view(created.principal))
    view = {**key_view(created.principal, datetime.now(UTC), created.secret[:14]), "key": created.secret}
    if as_json:
        print_json(view)
        return
    Console().print(f"Created {view['role']} key [bold]{view['id']}[/] for team [bold]{team}[/]. Store it now; "
                    "it is shown once:")
    typer.echo(created.secret)


@app.command("list")
@one_line_errors
def list_(config: ConfigOpt = None, data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """List keys (never their secrets)."""
    views = [key_view(p, row.created_at, row.prefix) for row, p in _store(config, data_dir).list()]
    if as_json:
        print_json(views)
        return
    table = Table("id", "name", "team", "prefix", "routes", "role", "scopes", "status", "expires")
    for v in views:
        status = "revoked" if v["revoked"] else "active"
        routes = ",".join(v["allowed_routes"]) if v["allowed_routes"] is not None else "*"
        scopes = " ".join(f"{k[:-1]}:{n}" for k, names in (v["scopes"] or {}).items() for n in names)
        table.add_row(v["id"], v["name"], v["team"], (v["prefix"] or "") + "…", routes, v["role"], scopes or "*",
                      status, v["expires_at"] or "never")
    Console().print(table)


@app.command("revoke")
@one_line_errors
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (see `strata keys list`)")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Revoke a key. A running gateway stops accepting it within keys.sync_interval."""
    settings, db = open_data(config, data_dir)
    audit = audit_log(settings, db)
    audit.check_writable()
    p = KeyStore(db).revoke(key_id)
    audit.append(cli_actor(), "key.revoke", key_id, key_view(p))
    typer.echo(f"revoked {p.key_id} ({p.name}, team {p.team})")
