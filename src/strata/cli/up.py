"""``strata up``: run the gateway and its local engines on one machine."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console

from strata.app import build_state, create_app
from strata.cli import runtime
from strata.cli.common import ConfigOpt, DataDirOpt, one_line_errors, settings_from
from strata.config.settings import Settings
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
        runner.run(_serve(server, settings, secret, config))


async def _serve(server: uvicorn.Server, settings: Settings, secret: str | None, config: Path | None) -> None:
    _forget_on_signal(settings)
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if not server.started:
        await task
        return
    url = _url(settings, server)
    runtime.record(url, settings, config)
    try:
        _banner(url, settings, secret)
        await task
    finally:
        runtime.forget(settings)


def _forget_on_signal(settings: Settings) -> None:
    """uvicorn re-raises the SIGTERM/SIGINT it stopped on once it is done: this handler then runs, says in
    the runtime files that nothing serves any more, and lets the signal end the process as it would have."""
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(sig: int, frame: FrameType | None) -> None:
        runtime.forget(settings)
        signal.signal(sig, previous[sig])
        signal.raise_signal(sig)

    for sig in previous:
        signal.signal(sig, handler)


def _admin_key(settings: Settings, state: AppState) -> str | None:
    """The admin key to show: none if preset by env, a fresh one on first start."""
    if settings.admin_key is not None or state.governance.keys.admin_exists():
        return None
    created = state.governance.keys.create("admin", team="admin", is_admin=True)
    state.governance.auth.load()
    return created.secret


def _url(settings: Settings, server: uvicorn.Server) -> str:
    host = settings.server.host if settings.server.host not in ("0.0.0.0", "::") else "127.0.0.1"
    port = settings.server.port
    for s in server.servers:
        for sock in s.sockets:
            port = sock.getsockname()[1]  # the real one, also for --port 0
    return f"http://{host}:{port}"


def _banner(url: str, settings: Settings, secret: str | None) -> None:
    """Where it runs, the admin key, and lines to paste into another shell (which find this server too)."""
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"\n[bold green]Strata is running at {url}[/]  (data: {settings.data_dir.resolve()})")
    exports = [f"STRATA_URL={url}"]
    if secret:
        console.print(f"Admin key (shown once, store it now): [bold]{secret}[/]")
        exports += [f"STRATA_ADMIN_KEY={secret}", f"STRATA_KEY={secret}"]
    elif settings.admin_key is not None:
        console.print("Admin key: the one set in STRATA_ADMIN_KEY")
        exports.append('STRATA_KEY="$STRATA_ADMIN_KEY"')
    else:
        console.print("Admin key: the one printed on the first start (or make another: "
                      "strata keys create NAME --admin); set STRATA_KEY to it for the curl line below")
    chat = next((r.name for r in settings.routes
                 if r.deployments[0].engine.type != "sentence-transformers"), settings.routes[0].name)
    body = json.dumps({"model": chat, "messages": [{"role": "user", "content": "Hello!"}]})
    console.print("In another shell:")
    if (activate := _activate()) is not None:
        console.print(f"  source {activate}      # puts `strata` on PATH", markup=False)
    console.print(f"  export {' '.join(exports)}", markup=False)
    console.print(f'  curl {url}/v1/chat/completions -H "Authorization: Bearer $STRATA_KEY" '
                  f"-H 'Content-Type: application/json' -d '{body}'\n", markup=False)


def _activate() -> Path | None:
    """This virtualenv's activate script, when its ``strata`` is not what PATH finds."""
    bindir = Path(sys.executable).parent
    activate = bindir / "activate"
    found = shutil.which("strata")
    if not activate.is_file() or (found is not None and Path(found).parent == bindir):
        return None
    return activate.absolute()
