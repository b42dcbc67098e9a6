"""Shared CLI plumbing: loading settings from the common options, one-line errors."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from strata.config.settings import Settings, load_settings
from strata.errors import ConfigError, InvalidRequest, StrataError
from strata.observe.usage import COLUMNS, window_start

F = TypeVar("F", bound=Callable[..., Any])
err_console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="strata.yaml to load", show_default=False)]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Where the SQLite DB and logs live")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]


def settings_from(config: Path | None, data_dir: Path | None, **more: Any) -> Settings:
    return load_settings(config, data_dir=data_dir, **more)


def one_line_errors(fn: F) -> F:
    """Turn Strata errors into one readable line on stderr and a non-zero exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StrataError as exc:
            err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
            raise typer.Exit(2 if isinstance(exc, ConfigError) else 1) from None

    return wrapper  # type: ignore[return-value]


def check_report(by: str, since: str) -> None:
    """``--by`` and ``--since`` of a ledger report, checked before any database is looked for."""
    window_start(since)
    if not (by.startswith("tag:") and len(by) > 4) and by not in COLUMNS:
        raise InvalidRequest(f"cannot group by {by!r}; use one of: {', '.join([*COLUMNS, 'tag:NAME'])}", param="by")


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def key_values(pairs: list[str], option: str, example: str) -> dict[str, Any]:
    """``["a=1", "b.c=x"]`` -> ``{"a": 1, "b": {"c": "x"}}``: values read as JSON when they parse, dotted keys
    nest. A malformed pair is a one-line error naming ``option``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise InvalidRequest(f"{option}: expected KEY=VALUE, e.g. {example} (got {pair!r})")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        node = out
        *parents, leaf = name.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = parsed
    return out
