"""``strata routes …`` and ``strata deploy …``: inspect and change a running gateway's routes.

These talk to the admin API of a running Strata (``--url``/``STRATA_URL``, else the one ``strata up``
recorded, see ``cli.runtime``; admin key from ``--key`` or ``STRATA_ADMIN_KEY``), so the change applies at
once, without a restart, and lands in the audit trail.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from strata.cli.common import JsonOpt, key_values, one_line_errors, print_json
from strata.cli.runtime import server_url
from strata.errors import AuthenticationFailed, InvalidRequest, NotFound, StrataError, UpstreamUnavailable

app = typer.Typer(help="Inspect and change routes on a running Strata.", no_args_is_help=True)
UrlOpt = Annotated[str | None, typer.Option("--url", envvar="STRATA_URL", show_default=False,
                                            help="Strata's base URL [default: the running `strata up`]")]
KeyOpt = Annotated[str | None, typer.Option("--key", envvar="STRATA_ADMIN_KEY", help="Admin key", show_default=False)]
ERRORS = {400: InvalidRequest, 401: AuthenticationFailed, 404: NotFound}


def call(url: str | None, key: str | None, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One admin API call; its error becomes a one-line CLI error."""
    url = server_url(url)
    if not key:
        raise AuthenticationFailed("no admin key: set STRATA_ADMIN_KEY (or pass --key) to the admin key `strata up` "
                                   "printed on its first start, or make one: strata keys create ops --admin")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        message = json.loads(exc.read() or b"{}").get("error", {}).get("message", exc.reason)
        raise ERRORS.get(exc.code, StrataError)(f"{message} (HTTP {exc.code})") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UpstreamUnavailable(f"cannot reach Strata at {url}: {getattr(exc, 'reason', exc)}") from None


def _table(route: dict[str, Any]) -> Table:
    table = Table("deployment", "role", "weight", "engine", "model", "breaker", "in flight", "ready",
                  title=f"route {route['name']} (balancer {route['balancer']}, retries {route['retries']})")
    for d in route["deployments"]:
        s = d["status"]
        table.add_row(d["name"], d["role"], f"{d['weight']:g}", d["engine"]["type"], str(d["engine"].get("model")),
                      str(s["breaker"]), str(s["in_flight"]), str(s["ready"]))
    return table


@app.command("list")
@one_line_errors
def list_(url: UrlOpt = None, key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """List routes with their deployments and live state."""
    data = call(url, key, "GET", "/admin/routes")["data"]
    if as_json:
        print_json(data)
        return
    for route in data:
        Console().print(_table(route))


@app.command("show")
@one_line_errors
def show(route: str, url: UrlOpt = None, key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Show one route: deployments, roles, weights, breaker state, in-flight requests."""
    data = call(url, key, "GET", f"/admin/routes/{route}")
    print_json(data) if as_json else Console().print(_table(data))


@app.command("changes")
@one_line_errors
def changes(route: str, url: UrlOpt = None, key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """The audit trail of a route: who changed what, when."""
    data = call(url, key, "GET", f"/admin/routes/{route}/changes")["data"]
    if as_json:
        print_json(data)
        return
    table = Table("id", "at", "actor", "action", "deployments after", "reason")
    for c in data:
        after = ", ".join(d["name"] for d in (c["after"] or {}).get("deployments", [])) or "(config file)"
        table.add_row(str(c["id"]), c["at"], c["actor"], c["action"], after, c.get("reason") or "")
    Console().print(table)


@app.command("reset")
@one_line_errors
def reset(route: str, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Drop run-time changes: the route goes back to what the config file says."""
    call(url, key, "POST", f"/admin/routes/{route}/reset")
    typer.echo(f"route {route} reset to the config file")


@app.command("set")
@one_line_errors
def set_(
    route: str,
    settings: Annotated[list[str], typer.Argument(help="KEY=VALUE pairs, nested with dots: retries=1 "
                                                  "canary.max_ttft_ratio=3 complexity.threshold=0.3")],
    url: UrlOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change route-level settings on a running Strata (recorded in the audit trail)."""
    body = key_values(settings, "settings", "retries=1")
    data = call(url, key, "PATCH", f"/admin/routes/{route}", body)["route"]
    print_json(data) if as_json else Console().print(_table(data))
