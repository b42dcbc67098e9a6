"""``strata lineage show REQUEST_ID|DATASET@VERSION``: where a RAG answer's passages came from (request ->
chunks -> documents -> dataset version -> pipeline steps), or what a dataset version fed (-> documents ->
chunks -> requests), from the running gateway (``GET /admin/lineage/{ref}``)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console
from rich.tree import Tree

from strata.cli.common import JsonOpt, one_line_errors, print_json
from strata.cli.routes import KeyOpt, UrlOpt, call

app = typer.Typer(help="Lineage across layers: requests, chunks, documents, datasets, pipeline steps.",
                  no_args_is_help=True)


@app.command("show")
@one_line_errors
def show(ref: Annotated[str, typer.Argument(help="A request id (X-Request-Id) or DATASET@VERSION")],
         team: Annotated[str | None, typer.Option(help="DATASET@VERSION: the dataset's team (default: the key's)")]
         = None,
         url: UrlOpt = None, key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Walk the lineage graph up (what it came from) and down (what was made from it)."""
    path = f"/admin/lineage/{quote(ref, safe='@')}" + (f"?team={quote(team)}" if team else "")
    out = call(url, key, "GET", path)
    if as_json:
        print_json(out)
        return
    start = out["start"]
    root = Tree(f"[bold]{start['kind']}[/bold] {start['id']}")
    for direction, arrow in (("up", "came from"), ("down", "used by")):
        hops = out[direction]
        if hops:
            branch = root.add(f"{arrow} ({', '.join(f'{n} {k}' for k, n in out['summary'][direction].items())})")
            _tree(branch, hops, direction)
    Console().print(root)


def _tree(branch: Tree, hops: list[dict[str, Any]], direction: str) -> None:
    """The hops as nested nodes (each node once, under the first node that reached it)."""
    children: dict[tuple[str, str], list[tuple[str, str, str | None]]] = {}
    for h in hops:
        near = (h["dst_kind"], h["dst_id"]) if direction == "up" else (h["src_kind"], h["src_id"])
        far = (h["src_kind"], h["src_id"]) if direction == "up" else (h["dst_kind"], h["dst_id"])
        children.setdefault(near, []).append((*far, h.get("relation")))
    firsts = [h for h in hops if h["depth"] == 1]
    seen: set[tuple[str, str]] = set()

    def add(node: Tree, key: tuple[str, str], depth: int) -> None:
        for kind, ident, relation in children.get(key, []):
            if (kind, ident) in seen or depth > 12:
                continue
            seen.add((kind, ident))
            add(node.add(f"{kind} {ident}" + (f" [dim]({relation})[/dim]" if relation else "")), (kind, ident),
                depth + 1)

    if firsts:
        h = firsts[0]
        add(branch, (h["dst_kind"], h["dst_id"]) if direction == "up" else (h["src_kind"], h["src_id"]), 1)
