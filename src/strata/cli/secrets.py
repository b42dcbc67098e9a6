"""``strata secrets list|rotate|new-key``: the encrypted upstream keys (``governance.secrets``)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from strata.cli.common import ConfigOpt, DataDirOpt, JsonOpt, one_line_errors, print_json
from strata.cli.runtime import open_data
from strata.errors import ConfigError
from strata.governance.secrets import Keyring, SecretStore, key_id, new_key, write_key_file

app = typer.Typer(help="Encrypted upstream keys: list them, rotate the encryption key.", no_args_is_help=True)


@app.command("list")
@one_line_errors
def list_(config: ConfigOpt = None, data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """List stored secrets by name and encryption key id (never their values)."""
    settings, db = open_data(config, data_dir)
    keyring = Keyring.load(settings.secrets, settings.data_dir)
    rows = SecretStore(db, keyring).list()
    if as_json:
        print_json(rows)
        return
    table = Table("name", "key id", "updated")
    for r in rows:
        current = "" if r["key_id"] == keyring.newest_id else " (old key)"
        table.add_row(r["name"], r["key_id"] + current, r["updated_at"])
    Console().print(table)


@app.command("rotate")
@one_line_errors
def rotate(
    new: Annotated[bool, typer.Option("--new-key", help="First add a new key to the key file (not with "
                                      "STRATA_SECRET_KEY: put the new key first there yourself)")] = False,
    drop_old: Annotated[bool, typer.Option("--drop-old", help="Then remove the older keys from the key file")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Re-encrypt every secret under the newest key (the first of STRATA_SECRET_KEY or of the key file)."""
    settings, db = open_data(config, data_dir)
    keyring = Keyring.load(settings.secrets, settings.data_dir)
    if (new or drop_old) and keyring.path is None:
        raise ConfigError("--new-key and --drop-old edit the key file; the keys come from STRATA_SECRET_KEY "
                          "(put a new key first there, run `strata secrets rotate`, then remove the old ones)")
    if new and keyring.path is not None:
        write_key_file(keyring.path, [new_key(), *keyring.keys])
        keyring = Keyring.from_file(keyring.path)
    moved = SecretStore(db, keyring).rotate()
    if drop_old and keyring.path is not None:
        write_key_file(keyring.path, keyring.keys[:1])
    typer.echo(f"re-encrypted {moved} secret(s) under key {keyring.newest_id}"
               + (f"; dropped {len(keyring.keys) - 1} older key(s)" if drop_old else ""))


@app.command("new-key")
def new_key_() -> None:
    """Print a new encryption key (for STRATA_SECRET_KEY; its id is printed on stderr)."""
    key = new_key()
    typer.echo(key)
    typer.echo(f"key id {key_id(key)}", err=True)
