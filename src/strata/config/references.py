"""Secrets in config by reference: ``env:NAME`` or ``file:/path`` instead of a literal upstream key.

A reference is kept as written (in the config, in route changes, in ``/admin`` views) and resolved only when
an engine is built, so the key itself lives in the environment or a file the operator controls. Keys given at
run time through the admin API are stored encrypted (``governance.secrets``) and referenced as
``secret:NAME``; that form is Strata's own and is resolved before engines are built.
"""

from __future__ import annotations

import os
from pathlib import Path

from strata.errors import ConfigError

ENV, FILE, STORED = "env:", "file:", "secret:"


def is_reference(value: str) -> bool:
    return value.startswith((ENV, FILE, STORED))


def resolve_reference(value: str, where: str) -> str:
    """The secret ``value`` stands for; a missing variable or file is a ``ConfigError`` naming ``where``."""
    if value.startswith(ENV):
        name = value.removeprefix(ENV)
        found = os.environ.get(name)
        if not found:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return found
    if value.startswith(FILE):
        path = Path(value.removeprefix(FILE)).expanduser()
        try:
            found = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None
        if not found:
            raise ConfigError(f"{where}: {path} is empty")
        return found
    if value.startswith(STORED):
        raise ConfigError(f"{where}: {value.split(':', 1)[0]}: references are Strata's own; give the key itself, "
                          "env:NAME or file:/path")
    return value


def mask(value: str) -> str:
    """How a secret is shown: a reference as written, a literal as ``sk-...abcd`` (long ones) or ``***``."""
    if value.startswith((ENV, FILE)):
        return value
    if len(value) >= 20:
        return f"{value[:3]}...{value[-4:]}"
    return "***"
