"""``strata models register|list|show|alias|approve``: the model registry of a running Strata, through its
admin API (a moved alias rolls out on the routes that follow it, see ``registry.rollout``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from strata.cli.common import JsonOpt, key_values, one_line_errors, print_json
from strata.cli.routes import KeyOpt, UrlOpt, call

app = typer.Typer(help="Register model versions, move aliases (champion, challenger…) and approve versions.",
                  no_args_is_help=True)


@app.command("register")
@one_line_errors
def register(
    model: Annotated[str, typer.Argument(help="Registered model name, e.g. support-bot")],
    artifact: Annotated[str, typer.Argument(help="GGUF file or HF model directory, bundled:NAME, or (engine "
                                            "openai) the upstream's model name")],
    engine: Annotated[str, typer.Option(help="Engine type that serves it: llamacpp, sentence-transformers, openai")]
    = "llamacpp",
    param: Annotated[list[str] | None, typer.Option(help="Engine parameter KEY=VALUE, e.g. base_url=http://… "
                                                    "(repeatable)")] = None,
    metric: Annotated[list[str] | None, typer.Option(help="Metric KEY=VALUE (repeatable)")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Tag KEY=VALUE (repeatable)")] = None,
    run_id: Annotated[str | None, typer.Option(help="The training or eval run that produced it")] = None,
    dataset: Annotated[list[str] | None, typer.Option(help="A dataset version it was trained on, NAME@N "
                                                      "(repeatable)")] = None,
    description: Annotated[str | None, typer.Option(help="What the model is for")] = None,
    url: UrlOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a new immutable version (its content hash is computed by the gateway)."""
    body = {"model": model, "artifact": artifact, "engine_type": engine,
            "parameters": key_values(param or [], "--param", "base_url=http://127.0.0.1:8001/v1"),
            "metrics": key_values(metric or [], "--metric", "accuracy=0.91"),
            "tags": key_values(tag or [], "--tag", "team=support"), "run_id": run_id,
            "dataset_versions": dataset or [], "description": description}
    view = call(url, key, "POST", "/admin/registry/models", body)
    if as_json:
        print_json(view)
        return
    Console().print(f"registered [bold]{view['ref']}[/] ({view['engine_type']}, {view['content_hash'] or 'no hash'})")


@app.command("list")
@one_line_errors
def list_models(url: UrlOpt = None, key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Registered models, their latest version and aliases."""
    data = call(url, key, "GET", "/admin/registry/models")["data"]
    if as_json:
        print_json(data)
        return
    table = Table("model", "latest", "aliases", "created", title="registered models")
    for m in data:
        aliases = ", ".join(f"{a}→{v}" for a, v in sorted(m["aliases"].items()))
        table.add_row(m["name"], str(m["latest_version"]), aliases, m["created_at"][:19])
    Console().print(table)


def _approval(v: dict[str, Any]) -> str:
    a = v["approval"]
    return a["status"] if a["by"] is None else f"{a['status']} by {a['by']} {str(a['at'])[:19]}"


@app.command("show")
@one_line_errors
def show(model: Annotated[str, typer.Argument(help="Registered model name")], url: UrlOpt = None,
         key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """A model's versions (artifact, hash, lineage, approval) and aliases."""
    view = call(url, key, "GET", f"/admin/registry/models/{model}")
    if as_json:
        print_json(view)
        return
    table = Table("version", "aliases", "engine", "artifact", "hash", "run", "datasets", "approval",
                  title=f"model {model}")
    for v in view["versions"]:
        table.add_row(str(v["version"]), ", ".join(v["aliases"]), v["engine_type"], v["artifact_uri"],
                      (v["content_hash"] or "")[:19], v["run_id"] or "", ", ".join(v["dataset_versions"]),
                      _approval(v))
    Console().print(table)
    for a in view["aliases"]:
        if a["pending"] is not None:
            Console().print(f"{a['alias']}: rolling out version {a['pending']} (canary), now {a['version']}")


@app.command("alias")
@one_line_errors
def alias(
    model: Annotated[str, typer.Argument(help="Registered model name")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="champion, challenger, …")],
    version: Annotated[int, typer.Argument(help="The version the alias moves to")],
    reason: Annotated[str | None, typer.Option(help="Why (kept in the audit trail)")] = None,
    url: UrlOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move an alias: gated by eval suites, rolled out as a canary on routes that follow it and have canary steps."""
    view = call(url, key, "PUT", f"/admin/registry/models/{model}/aliases/{alias_name}",
                {"version": version, "reason": reason})
    if as_json:
        print_json(view)
        return
    a = view["alias"]
    if view["rollouts"]:
        Console().print(f"{model}@{alias_name}: canary of version {version} started on "
                        f"{', '.join(view['rollouts'])}; the alias moves when it is promoted")
    else:
        rebuilt = f" (rebuilt on {', '.join(view['rebuilt'])})" if view["rebuilt"] else ""
        Console().print(f"{model}@{alias_name} -> version {a['version']}{rebuilt}")


@app.command("approve")
@one_line_errors
def approve(
    model: Annotated[str, typer.Argument(help="Registered model name")],
    version: Annotated[str, typer.Argument(help="Version number or alias")],
    reject: Annotated[bool, typer.Option("--reject", help="Reject instead of approving")] = False,
    note: Annotated[str | None, typer.Option(help="A note kept with the approval")] = None,
    url: UrlOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve (or reject) a version; who and when are recorded."""
    view = call(url, key, "POST", f"/admin/registry/models/{model}/versions/{version}/approve",
                {"status": "rejected" if reject else "approved", "note": note})
    if as_json:
        print_json(view)
        return
    Console().print(f"{view['ref']}: {_approval(view)}")
