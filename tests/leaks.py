"""Secrets never reach a log: the secret values the suite hands to Strata, and the check, run when the test
session ends, that greps every log the run produced for them (issue 13: "secrets absent from every log line
of a full test run").

What counts as a secret:

- values a test registers with :func:`secret` where it defines them: upstream ``api_key``s, Fernet keys
  given through ``STRATA_SECRET_KEY``, the bootstrap ``ADMIN_KEY`` (``tests.servers``);
- every key Strata generates (``POST /admin/keys``, ``strata keys create``): found by its shape
  (``sk-strata-`` and 43 URL-safe characters), so no test has to register one;
- the Fernet keys Strata writes to a data dir's ``secret.key`` on first start, read when the session ends.

What counts as a log: every ``*.log`` file under pytest's base temp dir (each ``strata up`` writes
``<data_dir>/strata.log``, at the level its config asks for) and every record logged in the test process
(a handler on the root logger; Strata's own loggers at DEBUG for the session, third-party ones unchanged).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from strata.governance.keys import KEY_PREFIX

SECRETS: set[str] = set()
GENERATED = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{32,}")


def secret(value: str) -> str:
    """Register ``value`` as a secret no log may contain; returns it, so a definition can wrap it."""
    SECRETS.add(value)
    return value


@dataclass(frozen=True, slots=True)
class Leak:
    where: str  # "path:line" of a log file, or the source line of a log record and the test that ran
    text: str  # the line, each secret in it masked (the report must not spread it further)

    def __str__(self) -> str:
        return f"{self.where}: {self.text[:200]}"


class RecordKeeper(logging.Handler):
    """Keeps the text of every record (message and traceback) with where it was logged and in which test."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[tuple[str, str]] = []
        self.test = "(no test)"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a record whose arguments do not fit its message: keep what there is
            text = f"{record.msg!r} {record.args!r}"
        self.lines.append((f"{record.pathname}:{record.lineno} in {self.test}", text))


@dataclass
class LeakWatch:
    """Installed for the session (``start``), asked once at the end (``leaks``)."""

    keeper: RecordKeeper = field(default_factory=RecordKeeper)
    base: Path | None = None  # pytest's base temp dir, once a test asked for one
    _level: int = logging.NOTSET

    def start(self) -> None:
        logging.getLogger().addHandler(self.keeper)
        strata = logging.getLogger("strata")
        self._level = strata.level
        strata.setLevel(logging.DEBUG)

    def stop(self) -> None:
        logging.getLogger().removeHandler(self.keeper)
        logging.getLogger("strata").setLevel(self._level)

    def leaks(self) -> list[Leak]:
        files, keys = run_files(self.base) if self.base is not None else ([], set())
        values = SECRETS | keys
        found = [Leak(where, mask(text, values)) for where, text in self.keeper.lines if leaks_in(text, values)]
        for path in files:
            found += file_leaks(path, values)
        return found


def leaks_in(text: str, values: set[str]) -> bool:
    return GENERATED.search(text) is not None or any(v in text for v in values)


def mask(text: str, values: set[str]) -> str:
    for v in sorted(values, key=len, reverse=True):
        text = text.replace(v, f"<secret {v[:6]}…>")
    return GENERATED.sub(f"<secret {KEY_PREFIX}…>", text)


def file_leaks(path: Path, values: set[str]) -> list[Leak]:
    text = path.read_text(errors="replace")
    if not leaks_in(text, values):  # the common case: one pass over the whole file
        return []
    return [Leak(f"{path}:{n}", mask(line, values)) for n, line in enumerate(text.splitlines(), 1)
            if leaks_in(line, values)]


def run_files(base: Path) -> tuple[list[Path], set[str]]:
    """The run's log files, and the encryption keys Strata generated in its data dirs (``secret.key``, one key
    a line)."""
    logs: list[Path] = []
    keys: set[str] = set()
    for d, _, names in os.walk(base):
        logs += [Path(d, f) for f in names if f.endswith(".log")]
        if "secret.key" in names:
            keys.update(k for k in Path(d, "secret.key").read_text(errors="replace").split() if len(k) >= 32)
    return logs, keys
