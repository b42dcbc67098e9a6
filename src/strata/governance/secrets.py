"""Secrets at rest: upstream API keys given at run time are stored encrypted, and referenced by name.

A deployment added through the admin API (``PUT /admin/routes/{route}/deployments/{name}``, a canary or a
shadow) may carry an ``api_key``. The route change recorded for it (``routing.changes``) holds only
``secret:NAME``; the key itself is in the ``secrets`` table, encrypted with Fernet (AES-128-CBC and
HMAC-SHA256, from the ``cryptography`` library).

The encryption keys (``Keyring``) come from ``STRATA_SECRET_KEY`` (comma-separated, newest first) or, when it
is not set, from a key file (``secrets.key_file``, default ``<data_dir>/secret.key``: one key a line, newest
first, created 0600 on first start). Decryption tries every key (``MultiFernet``); ``rotate`` re-encrypts
every secret under the newest, after which the older keys can be dropped.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, SecretStr
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from strata.config.references import STORED, is_reference
from strata.errors import ConfigError
from strata.store.tables import SecretRow

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

    from strata.governance.config import SecretsSettings

log = logging.getLogger(__name__)
ENV_KEY = "STRATA_SECRET_KEY"


def new_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def key_id(key: str) -> str:
    """A short public name of an encryption key (a hash prefix), stored beside each secret."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class Keyring:
    """The encryption keys, newest first."""

    def __init__(self, keys: list[str], source: str, path: Path | None = None) -> None:
        from cryptography.fernet import Fernet, MultiFernet

        if not keys:
            raise ConfigError(f"{source}: no encryption key")
        fernets = []
        for i, key in enumerate(keys, 1):
            try:
                fernets.append(Fernet(key.encode()))
            except ValueError:
                raise ConfigError(f"{source}: key {i} is not a Fernet key (32 url-safe base64 bytes; make one "
                                  "with `strata secrets new-key`)") from None
        self.keys = keys
        self.source = source
        self.path = path  # the key file, re-read when a secret needs a key added since (``strata secrets rotate``)
        self.fernet: MultiFernet = MultiFernet(fernets)

    @property
    def newest_id(self) -> str:
        return key_id(self.keys[0])

    @classmethod
    def load(cls, cfg: SecretsSettings, data_dir: Path, create: bool = False) -> Keyring:
        """From ``STRATA_SECRET_KEY``, else the key file (made when ``create`` and absent)."""
        if env := os.environ.get(ENV_KEY, "").strip():
            return cls([k.strip() for k in env.split(",") if k.strip()], ENV_KEY)
        path = key_path(cfg, data_dir)
        if not path.exists() and create:
            write_key_file(path, [new_key()])
            log.info("secrets: created the encryption key file %s (keep it, or secrets cannot be read)", path)
        return cls.from_file(path)

    @classmethod
    def at_start(cls, cfg: SecretsSettings, data_dir: Path) -> Keyring | Callable[[], Keyring]:
        """For the server: the keys, checked now when they exist; else a maker that creates the key file when
        the first secret is stored (a start that fails on its config leaves no key file behind)."""
        if os.environ.get(ENV_KEY, "").strip() or key_path(cfg, data_dir).exists():
            return cls.load(cfg, data_dir)
        return lambda: cls.load(cfg, data_dir, create=True)

    @classmethod
    def from_file(cls, path: Path) -> Keyring:
        try:
            lines = path.read_text().split()
        except FileNotFoundError:
            raise ConfigError(f"secrets.key_file: {path} does not exist (set {ENV_KEY}, or start `strata up` "
                              "once to create it)") from None
        except OSError as exc:
            raise ConfigError(f"secrets.key_file: cannot read {path}: {exc.strerror}") from None
        if path.stat().st_mode & 0o077:
            log.warning("secrets: %s is readable by other users; chmod 600 it", path)
        return cls(lines, f"secrets.key_file ({path})", path)


def key_path(cfg: SecretsSettings, data_dir: Path) -> Path:
    return (cfg.key_file or data_dir / "secret.key").expanduser()


def write_key_file(path: Path, keys: list[str]) -> None:
    """Write the keys (newest first), readable by the owner only, replacing the file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(keys) + "\n")
    os.replace(tmp, path)


class SecretStore:
    """Encrypted secrets by name in the ``secrets`` table (synchronous; the server calls it off the loop)."""

    def __init__(self, engine: Engine, keyring: Keyring | Callable[[], Keyring]) -> None:
        self.engine = engine
        self._keyring: Keyring | None = keyring if isinstance(keyring, Keyring) else None
        self._make: Callable[[], Keyring] | None = None if isinstance(keyring, Keyring) else keyring

    @property
    def keyring(self) -> Keyring:
        if self._keyring is None:
            assert self._make is not None
            self._keyring = self._make()
        return self._keyring

    @keyring.setter
    def keyring(self, keyring: Keyring) -> None:
        self._keyring = keyring

    def put(self, name: str, value: str) -> None:
        token = self.keyring.fernet.encrypt(value.encode()).decode()
        now = datetime.now(UTC)
        with Session(self.engine) as s, s.begin():
            row = s.get(SecretRow, name)
            if row is None:
                s.add(SecretRow(name=name, ciphertext=token, key_id=self.keyring.newest_id, created_at=now,
                                updated_at=now))
            elif self._decrypt(row) != value:
                row.ciphertext, row.key_id, row.updated_at = token, self.keyring.newest_id, now

    def get(self, name: str) -> str:
        with Session(self.engine) as s:
            row = s.get(SecretRow, name)
            if row is None:
                raise ConfigError(f"secret {name!r} is referenced but not stored")
            return self._decrypt(row)

    def _decrypt(self, row: SecretRow) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self.keyring.fernet.decrypt(row.ciphertext.encode()).decode()
        except InvalidToken:
            if self.keyring.path is not None and row.key_id not in map(key_id, self.keyring.keys):
                self.keyring = Keyring.from_file(self.keyring.path)  # rotated by the CLI since this one loaded
                if row.key_id in map(key_id, self.keyring.keys):
                    return self._decrypt(row)
            raise ConfigError(f"secret {row.name!r} (key {row.key_id}) cannot be decrypted with the keys of "
                              f"{self.keyring.source}; was its key dropped before `strata secrets rotate`?") from None

    def rotate(self) -> int:
        """Re-encrypt every secret under the newest key; the count of secrets that moved."""
        from cryptography.fernet import InvalidToken

        moved = 0
        newest = self.keyring.newest_id
        with Session(self.engine) as s, s.begin():
            for row in s.scalars(select(SecretRow)):
                try:
                    token = self.keyring.fernet.rotate(row.ciphertext.encode()).decode()
                except InvalidToken:
                    raise ConfigError(f"secret {row.name!r} (key {row.key_id}) cannot be decrypted with the keys "
                                      f"of {self.keyring.source}; nothing was rotated") from None
                moved += row.key_id != newest
                row.ciphertext, row.key_id, row.updated_at = token, newest, datetime.now(UTC)
        return moved

    def list(self) -> list[dict[str, Any]]:
        with Session(self.engine) as s:
            return [{"name": r.name, "key_id": r.key_id, "updated_at": _iso(r.updated_at)}
                    for r in s.scalars(select(SecretRow).order_by(SecretRow.name))]


def _iso(dt: datetime) -> str:
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).isoformat()


Path_ = tuple[str | int, ...]


def dump_secrets(model: BaseModel, fn: Callable[[Path_, str], str]) -> dict[str, Any]:
    """``model`` as JSON, each secret field (``SecretStr``) replaced by ``fn(path, value)``: pydantic's own JSON
    dump writes ``**********``, which would lose the key."""
    out: dict[str, Any] = _merge(model.model_dump(), model.model_dump(mode="json"), (), fn)
    return out


def _merge(py: Any, js: Any, path: Path_, fn: Callable[[Path_, str], str]) -> Any:
    if isinstance(py, SecretStr):
        return fn(path, py.get_secret_value())
    if isinstance(py, dict) and isinstance(js, dict):
        return {k: _merge(py.get(k), v, (*path, k), fn) for k, v in js.items()}
    if isinstance(py, list | tuple) and isinstance(js, list) and len(py) == len(js):
        return [_merge(p, j, (*path, i), fn) for i, (p, j) in enumerate(zip(py, js, strict=True))]
    return js


def map_strings(obj: Any, fn: Callable[[str], str]) -> Any:
    """``obj`` (JSON) with every string passed through ``fn``."""
    if isinstance(obj, str):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: map_strings(v, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        return [map_strings(v, fn) for v in obj]
    return obj


def stored_name(value: str) -> str | None:
    return value.removeprefix(STORED) if value.startswith(STORED) else None


def seal(store: SecretStore | None, prefix: str, model: BaseModel, names: Callable[[Path_], str]) -> dict[str, Any]:
    """``model`` as JSON with each literal secret stored encrypted under ``prefix/names(path)`` and replaced
    by ``secret:NAME``; references (``env:``, ``file:``) stay as written. Without a store a secret is ``***``."""

    def one(path: Path_, value: str) -> str:
        if is_reference(value):
            return value
        if store is None:
            return "***"
        name = f"{prefix}/{names(path)}"
        store.put(name, value)
        return STORED + name

    return dump_secrets(model, one)


def unseal(store: SecretStore, data: Any) -> Any:
    """``data`` (JSON) with every ``secret:NAME`` replaced by the decrypted secret."""
    return map_strings(data, lambda v: store.get(n) if (n := stored_name(v)) is not None else v)


def redact(data: Any) -> Any:
    """``data`` (JSON) fit to show: every ``secret:NAME`` becomes ``***``."""
    return map_strings(data, lambda v: "***" if v.startswith(STORED) else v)

