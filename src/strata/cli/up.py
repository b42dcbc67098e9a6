"""``strata up``: run the gateway and its local engines on one machine."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from strata.cli.common import ConfigOpt, DataDirOpt, one_line_errors, settings_from
from strata.config.settings import Settings
from strata.gateway.app import build_state, create_app
from strata.gateway.state import AppState


@one_line_errors
def up(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: 8000]")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Start Strata: the gateway, the local engines it supervises, the ledger and metrics."""
    settings = settings_from(config, data_dir, **{"server.host": host, "server.port": port})
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = build_state(settings)
    secret = _admin_key(settings, state)
    server = uvicorn.Server(uvicorn.Config(
        create_app(settings, state), host=settings.server.host, port=settings.server.port, lifespan="on",
        loop="none", http="httptools", log_level="warning", access_log=settings.server.access_log,
        timeout_graceful_shutdown=int(settings.server.graceful_timeout), server_header=False,
    ))
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(server, settings, secret))


async def _serve(server: uvicorn.Server, settings: Settings, secret: str | None) -> None:
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        _banner(settings, secret)
    await task


def _admin_key(settings: Settings, state: AppState) -> str | None:
    """The admin key to show: none if preset by env, a fresh one on first start."""
    if settings.admin_key is not None or state.keys.admin_exists():
        return None
    created = state.keys.create("admin", team="admin", is_admin=True)
    state.auth.load()
    return created.secret


def _banner(settings: Settings, secret: str | None) -> None:
    host = settings.server.host if settings.server.host not in ("0.0.0.0", "::") else "127.0.0.1"
    url = f"http://{host}:{settings.server.port}"
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"\n[bold green]Strata is running at {url}[/]  (data: {settings.data_dir})")
    if secret:
        console.print(f"Admin key (shown once, store it now): [bold]{secret}[/]")
        key = secret
    elif settings.admin_key is not None:
        console.print("Admin key: the one set in STRATA_ADMIN_KEY")
        key = "$STRATA_ADMIN_KEY"
    else:
        console.print("Admin key: created on first start; make another with `strata keys create NAME --admin`")
        key = "$STRATA_KEY"
    chat = next((r.name for r in settings.routes
                 if r.deployments[0].engine.type != "sentence-transformers"), settings.routes[0].name)
    body = json.dumps({"model": chat, "messages": [{"role": "user", "content": "Hello!"}]})
    console.print("Try it:")
    console.print(f"  curl {url}/v1/chat/completions -H 'Authorization: Bearer {key}' "
                  f"-H 'Content-Type: application/json' -d '{body}'\n", markup=False)
