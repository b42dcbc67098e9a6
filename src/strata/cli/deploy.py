"""``strata deploy …`` and ``strata shadow report``: change a running gateway's deployments and roll out
new model versions (canary with steps, shadow), through its admin API.

    strata deploy ROUTE DEPLOYMENT [--model …] [--role …] [--weight …]   add or change a deployment
    strata deploy ROUTE DEPLOYMENT --remove                              remove it
    strata deploy ROUTE --model M --canary 5% [--step 5,25,50,100]       start a canary rollout
    strata deploy ROUTE --model M --shadow 10%                           mirror traffic to a shadow
    strata deploy status|promote|rollback ROUTE                          follow or end a rollout
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from strata.cli.common import JsonOpt, key_values, one_line_errors, print_json
from strata.cli.routes import KeyOpt, UrlOpt, _table, call
from strata.errors import InvalidRequest, NotFound

ACTIONS = ("status", "promote", "rollback")
shadow_app = typer.Typer(help="Compare a shadow deployment's answers with the served ones.", no_args_is_help=True)


def percent(text: str | None, what: str) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise InvalidRequest(f"{what} must be a percentage such as 5% (got {text!r})") from None
    if not 0 < value <= 100:
        raise InvalidRequest(f"{what} must be above 0% and at most 100% (got {text!r})")
    return value


def seconds(text: str | None) -> float | None:
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise InvalidRequest(f"invalid duration {text!r}: use e.g. 30s, 5m, 1h") from None


@one_line_errors
def deploy(
    route: Annotated[str, typer.Argument(help="Route, or status|promote|rollback followed by the route")],
    deployment: Annotated[str | None, typer.Argument(help="Deployment name (the route for status|promote|"
                                                     "rollback)", show_default=False)] = None,
    model: Annotated[str | None, typer.Option(help="Model the engine serves (e.g. bundled:gemma3-270m)")] = None,
    canary: Annotated[str | None, typer.Option(help="Start a canary with this share of traffic, e.g. 5%")] = None,
    shadow: Annotated[str | None, typer.Option(help="Mirror this share of traffic to a shadow, e.g. 10%")] = None,
    step: Annotated[str | None, typer.Option(help="Canary plan, e.g. 5,25,50,100 (percent)")] = None,
    step_min_time: Annotated[str | None, typer.Option(help="Minimum time per step, e.g. 5m")] = None,
    step_min_requests: Annotated[int | None, typer.Option(help="Minimum canary requests per step")] = None,
    analysis: Annotated[list[str] | None, typer.Option(help="Canary analysis setting KEY=VALUE, e.g. "
                                                       "max_ttft_ratio=3 (repeatable; see `canary:` in the README)")]
    = None,
    engine: Annotated[str | None, typer.Option(help="Engine type for a new deployment: openai, llamacpp, …")] = None,
    base_url: Annotated[str | None, typer.Option(help="openai engine: upstream base URL")] = None,
    role: Annotated[str | None, typer.Option(help="primary or fallback")] = None,
    weight: Annotated[float | None, typer.Option(help="Share of traffic among its role")] = None,
    max_in_flight: Annotated[int | None, typer.Option(help="Shed traffic beyond this many requests")] = None,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the audit trail)")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the deployment from the route")] = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change deployments, start a canary or shadow, and follow, promote or roll back a rollout."""
    if route in ACTIONS:
        if deployment is None:
            raise InvalidRequest(f"usage: strata deploy {route} ROUTE")
        _action(route, deployment, reason, url, key, as_json)
        return
    engine_fields = {k: v for k, v in {"type": engine, "base_url": base_url}.items() if v is not None}
    if canary is not None or shadow is not None:
        if canary is not None and shadow is not None:
            raise InvalidRequest("choose one of --canary and --shadow")
        which = "canary" if canary is not None else "shadow"
        body: dict[str, Any] = {"traffic": percent(canary if canary is not None else shadow, f"--{which}"),
                                "model": model, "engine": engine_fields, "reason": reason}
        if deployment:
            body["name"] = deployment
        if step:
            try:
                body["steps"] = [float(s.strip().removesuffix("%")) for s in step.split(",") if s.strip()]
            except ValueError:
                raise InvalidRequest(f"--step must be percentages separated by commas (got {step!r})") from None
        plan: dict[str, Any] = {"step_min_seconds": seconds(step_min_time), "step_min_requests": step_min_requests}
        plan |= key_values(analysis or [], "--analysis", "max_ttft_ratio=3")
        if any(v is not None for v in plan.values()):
            body["canary"] = {k: v for k, v in plan.items() if v is not None}
        result = call(url, key, "POST", f"/admin/routes/{route}/{which}", body)
        _print_route(result["route"], as_json)
        return
    if deployment is None:
        raise InvalidRequest("name the deployment (strata deploy ROUTE DEPLOYMENT …), or start a rollout "
                             "with --canary or --shadow")
    path = f"/admin/routes/{route}/deployments/{deployment}"
    if remove:
        call(url, key, "DELETE", path)
        typer.echo(f"removed {deployment} from {route}")
        return
    try:
        current = next(d for d in call(url, key, "GET", f"/admin/routes/{route}")["deployments"]
                       if d["name"] == deployment)
        current.pop("status", None)
    except (NotFound, StopIteration):
        current = {"name": deployment, "engine": {}}
    if engine:
        current["engine"] = {"type": engine}
    current["engine"].update({k: v for k, v in {"base_url": base_url, "model": model}.items() if v is not None})
    current.update({k: v for k, v in {"role": role, "weight": weight, "max_in_flight": max_in_flight}.items()
                    if v is not None})
    _print_route(call(url, key, "PUT", path, current)["route"], as_json)


def _action(action: str, route: str, reason: str | None, url: str | None, key: str | None,
            as_json: bool) -> None:
    if action == "status":
        data = call(url, key, "GET", f"/admin/routes/{route}/rollout")
        if as_json:
            print_json(data)
            return
        _print_status(data)
        return
    result = call(url, key, "POST", f"/admin/routes/{route}/{action}", {"reason": reason} if reason else {})
    typer.echo("canary promoted: it now serves the route" if action == "promote"
               else "canary rolled back: the primaries serve all traffic")
    _print_route(result["route"], as_json)


def _print_route(route: dict[str, Any], as_json: bool) -> None:
    print_json(route) if as_json else Console().print(_table(route))


def _print_status(data: dict[str, Any]) -> None:
    console = Console()
    r = data["rollout"]
    if r is None:
        console.print(f"route {data['route']}: no canary rollout in progress")
    else:
        plan = " -> ".join(f"{s:g}%" for s in r["steps"]) or "(no plan: promote by hand)"
        console.print(f"route {data['route']}: canary [bold]{r['canary']}[/] at {r['traffic']:g}% · plan {plan} · "
                      f"this step {r['step_seconds']:.0f}s, {r['step_requests']} requests · decision "
                      f"[bold]{r['decision']}[/]", highlight=False)
        analysis = r["analysis"]
        if analysis:
            table = Table("metric", "canary", "primary", "decided", "worse", "detail")
            for c in analysis["checks"]:
                table.add_row(c["metric"], _fmt(c["canary"]), _fmt(c["primary"]), str(c["decided"]),
                              "[red]yes[/]" if c["worse"] else "no", c["detail"])
            console.print(table)
    if data["events"]:
        table = Table("at", "event", "message", title="recent events")
        for e in data["events"][:10]:
            table.add_row(e["at"], e["kind"], e["message"])
        console.print(table)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


@shadow_app.command("report")
@one_line_errors
def shadow_report(
    route: str,
    since: Annotated[str | None, typer.Option(help="Only mirrored requests this recent, e.g. 24h")] = None,
    url: UrlOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Served answers vs the shadow's: latency, tokens, cost, agreement, exact matches."""
    data = call(url, key, "GET", f"/admin/routes/{route}/shadow" + (f"?since={since}" if since else ""))
    if as_json:
        print_json(data)
        return
    console = Console()
    if not data["shadows"]:
        console.print(f"route {route}: no mirrored requests yet")
        return
    for s in data["shadows"]:
        table = Table("", "served (" + ", ".join(s["primary_deployments"]) + ")", f"shadow ({s['shadow_deployment']})",
                      title=f"route {route}: {s['requests']} mirrored requests, {s['shadow_errors']} shadow errors")
        for label, key_ in (("latency ms", "latency_ms"), ("completion tokens", "completion_tokens")):
            for q in ("mean", "p50", "p95"):
                table.add_row(f"{label} {q}", _fmt(s[key_]["primary"][q]), _fmt(s[key_]["shadow"][q]))
        table.add_row("cost USD (total)", _fmt(s["cost_usd"]["primary"]), _fmt(s["cost_usd"]["shadow"]))
        console.print(table)
        a = s["agreement"]
        console.print(f"agreement (embedding cosine): mean {_fmt(a['mean'])}, p50 {_fmt(a['p50'])}, "
                      f"min {_fmt(a['min'])} · exact match rate {_fmt(s['exact_match_rate'])}", highlight=False)
