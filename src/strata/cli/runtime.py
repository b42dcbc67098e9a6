"""Where the running Strata is, so that every ``strata`` command finds it (and its data) by itself.

``strata up`` writes ``server.json`` (URL, pid, data dir, database, config file) into its data dir, and the
same into ``~/.strata/current.json`` for commands run from any other directory. Commands look, in order:

- what was given: ``--url``/``STRATA_URL`` for the admin API; ``--data-dir``, ``--config``,
  ``STRATA_DATA_DIR`` or ``STRATA_DATABASE__URL`` for the database;
- ``./.strata`` (the default data dir of a ``strata up`` run here);
- ``~/.strata/current.json`` (the last ``strata up`` this user ran).

When none applies, or a database is not there, the command says in one line what to set; it never creates
an empty database of its own (only ``strata up`` does).
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from strata.config.settings import Settings, load_settings
from strata.errors import ConfigError
from strata.store.db import make_engine, migrate

log = logging.getLogger(__name__)
SERVER_FILE = "server.json"
DEFAULT_DATA_DIR = Path(".strata")
NOT_FOUND = ("no running Strata found (none recorded in ./.strata/server.json or ~/.strata/current.json): "
             "start one with `strata up`, or set STRATA_URL=http://HOST:PORT")


def user_file() -> Path:
    return Path.home() / ".strata" / "current.json"


def shown_url(database_url: str) -> str:
    """A database URL without its password, fit for a file or a message."""
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except ArgumentError:
        return database_url


def record(url: str, settings: Settings, config: Path | None) -> dict[str, Any]:
    """Write where this server is serving to its data dir and to the per-user file (best effort)."""
    info = {"url": url, "pid": os.getpid(), "data_dir": str(settings.data_dir.resolve()),
            "database": shown_url(settings.database_url),
            "config": str(config.resolve()) if config is not None else None,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds")}
    for path in (settings.data_dir / SERVER_FILE, user_file()):
        _write(path, info)
    return info


def forget(settings: Settings) -> None:
    """On a clean stop: the files keep saying where the data is, no longer that a server runs there."""
    for path in (settings.data_dir / SERVER_FILE, user_file()):
        info = _read(path)
        if info is not None and info.get("pid") == os.getpid():
            _write(path, {**info, "pid": None, "url": None})


def _write(path: Path, info: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        tmp.replace(path)
    except OSError as exc:
        log.warning("could not record where Strata serves in %s: %s", path, exc)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("data_dir") else None


def _alive(info: dict[str, Any]) -> bool:
    pid = info.get("pid")
    if not isinstance(pid, int) or not info.get("url"):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _recorded() -> list[tuple[Path, dict[str, Any]]]:
    here = Path(os.environ.get("STRATA_DATA_DIR") or DEFAULT_DATA_DIR) / SERVER_FILE
    found = [(p, _read(p)) for p in (here, user_file())]
    return [(p, info) for p, info in found if info is not None]


def server_url(given: str | None) -> str:
    """The admin API's base URL: the one given, else the running server's recorded one."""
    if given:
        return given
    for _, info in _recorded():
        if _alive(info):
            return str(info["url"])
    raise ConfigError(NOT_FOUND)


def _explicit(config: Path | None, data_dir: Path | None) -> bool:
    return config is not None or data_dir is not None or any(
        k == "STRATA_DATA_DIR" or k.startswith("STRATA_DATABASE") for k in os.environ)


def data_settings(config: Path | None, data_dir: Path | None) -> Settings:
    """The settings of the Strata whose data a command reads: as given, else the one run from here, else
    the last one this user started."""
    if _explicit(config, data_dir):
        return load_settings(config, data_dir=data_dir)
    here = DEFAULT_DATA_DIR / SERVER_FILE
    if (info := _read(here)) is not None:
        return _settings_of(here, info)
    if (DEFAULT_DATA_DIR / "strata.db").exists():
        return load_settings(None)
    if (info := _read(user_file())) is not None:
        return _settings_of(user_file(), info)
    raise ConfigError("no Strata data here (./.strata) and no `strata up` recorded in ~/.strata/current.json: "
                      "pass --data-dir DIR (or set STRATA_DATA_DIR) to the data dir of the Strata you run, "
                      "or --config FILE")


def _settings_of(path: Path, info: dict[str, Any]) -> Settings:
    config = Path(info["config"]) if info.get("config") else None
    settings = load_settings(config, data_dir=Path(info["data_dir"]))
    if shown_url(settings.database_url) != info.get("database"):
        raise ConfigError(f"the Strata recorded in {path} uses the database {info.get('database')}: set "
                          "STRATA_DATABASE__URL to it (with its password) or pass the --config it runs with")
    return settings


def open_existing(settings: Settings) -> Engine:
    """The database of a Strata that has run; one readable line when there is none (never a new one)."""
    url = settings.database_url
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:" and not Path(path).is_file():
            raise ConfigError(f"no Strata database at {path}: `strata up` creates it on its first start; or pass "
                              "--data-dir (or set STRATA_DATA_DIR) to the data dir of the Strata you run")
    engine = make_engine(url)
    if not url.startswith("sqlite"):
        try:
            has_schema = inspect(engine).has_table("alembic_version")
        except SQLAlchemyError:
            has_schema = True  # unreachable: migrate() below reports it in one line
        if not has_schema:
            raise ConfigError(f"database {shown_url(url)} has no Strata tables: `strata up` creates them on its "
                              "first start; or set STRATA_DATABASE__URL to the database of the Strata you run")
    migrate(engine)
    return engine


def open_data(config: Path | None, data_dir: Path | None) -> tuple[Settings, Engine]:
    settings = data_settings(config, data_dir)
    return settings, open_existing(settings)
