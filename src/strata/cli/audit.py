"""``strata audit verify|export``: check the audit log's hash chain, or write it out as JSON lines.

Both read the database directly (like ``strata usage``), so they work with the gateway stopped, and with the
same ``audit.hmac_key`` as the gateway when the log is keyed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer

from strata.cli.common import ConfigOpt, DataDirOpt, JsonOpt, one_line_errors, print_json
from strata.cli.runtime import open_data
from strata.config.settings import load_settings
from strata.errors import InvalidRequest
from strata.observe.audit import Sealer, Verdict, audit_log, verify_entries
from strata.observe.usage import window_start

app = typer.Typer(help="The tamper-evident audit log of admin changes.", no_args_is_help=True)


@app.command("verify")
@one_line_errors
def verify(
    file: Annotated[Path | None, typer.Option("--file", help="Verify an export (JSONL), not the database")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Walk the hash chain; exit 1 naming the first edited, deleted or reordered entry."""
    verdict = _verify_file(file, config, data_dir) if file else audit_log(*open_data(config, data_dir)).verify()
    if as_json:
        print_json(verdict.view())
    elif verdict.problem is None:
        keyed = f", keyed from entry {verdict.keyed_from}" if verdict.keyed_from else ""
        typer.echo(f"audit log intact: {verdict.entries} entries{keyed}; head {verdict.head_seq} "
                   f"{verdict.head_hash}")
    else:
        typer.echo(verdict.problem.line(), err=True)
    if verdict.problem is not None:
        raise typer.Exit(1)


def _verify_file(file: Path, config: Path | None, data_dir: Path | None) -> Verdict:
    """An export may start after entry 1 (``--since``): its first entry's link is taken as given."""
    key = load_settings(config, data_dir=data_dir).audit.hmac_key
    try:
        with file.open("rb") as f:
            entries = (orjson.loads(line) for line in f if line.strip())
            return verify_entries(entries, Sealer(key.get_secret_value().encode() if key else None), partial=True)
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise InvalidRequest(f"cannot read {file} as an audit export: {exc}") from None


@app.command("export")
@one_line_errors
def export(
    since: Annotated[str | None, typer.Option(help="Only entries of this window: 30m, 24h, 7d, …")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Write the audit log to stdout as JSON lines, oldest first (`> audit.jsonl`)."""
    start = window_start(since) if since else None
    n = audit_log(*open_data(config, data_dir)).export(sys.stdout, start)
    typer.echo(f"{n} entries exported", err=True)
