"""The audit log: one append-only, hash-chained trail of every security-relevant change.

Each entry's ``hash`` is SHA-256 over a canonical encoding (orjson, sorted keys) of ``[seq, at, actor,
action, subject, detail, prev_hash]``, and ``prev_hash`` is the previous entry's hash (64 zeros for the
first). Editing an entry breaks its hash; deleting one leaves a gap in ``seq`` (or, renumbered, a
``prev_hash`` naming an entry that is not there); swapping two moves hashes to seqs they were not made for.
``verify()`` walks the chain and names the first such entry.

With ``audit.hmac_key`` set (``STRATA_AUDIT__HMAC_KEY``) the hash is an HMAC-SHA256 under that key, so whoever
can write the database but not read the key cannot recompute the chain after an edit. Entries written before
the key was set stay plain; once one entry is keyed, an unkeyed entry after it is reported, and the gateway
starts with a keyed ``audit.signing`` entry so the newest entry is always keyed. Without a key the chain
proves the log was not edited *in place*; whoever can write the database can still rewrite it all or cut its
tail (keep the head that ``verify`` prints somewhere else to catch that).

How a feature records a change (admin actions only, never on the inference path)::

    await state.observe.audit.record(actor, "guard.update", route_name, {"before": old, "after": new})

or, inside a store's own transaction so the change and its entry commit together::

    audit.append(actor, "key.create", key_id, {...}, session=s)

``actor`` is the principal's key id (``admin-env`` for STRATA_ADMIN_KEY), ``cli:<user>`` for the CLI writing
the database directly, or ``strata:…`` for the gateway's own control loops. Actions are ``noun.verb``.

Replicas sharing a database each append safely: ``seq`` is unique; on SQLite the writer takes the database
lock before reading the head, on PostgreSQL a writer that loses the race for a ``seq`` retries on the new head.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import hmac
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

import orjson
from sqlalchemy import Engine, false, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from strata.errors import ConfigError, InternalError
from strata.store.tables import AuditEntry

if TYPE_CHECKING:
    from strata.config.settings import Settings

log = logging.getLogger(__name__)
GENESIS = "0" * 64
RETRIES = 50
RECENT = 4096  # hashes kept while verifying (bounded memory on any log)
WIDTHS = {"actor": 200, "action": 100, "subject": 400}  # the columns' widths: PostgreSQL refuses longer


@dataclass(frozen=True, slots=True)
class Problem:
    seq: int
    kind: str  # edited, deleted, reordered, unsigned
    message: str

    def line(self) -> str:
        return f"audit log broken at seq {self.seq}: {self.kind}: {self.message}"


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    keyed_from: int | None  # first seq sealed with the HMAC key (None: none is)
    problem: Problem | None = None

    def view(self) -> dict[str, Any]:
        return {**asdict(self), "problem": asdict(self.problem) if self.problem else None}


def cli_actor() -> str:
    """Who changes things through the CLI, which writes the database directly: the OS user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _iso(at: datetime) -> str:
    """SQLite hands back naive datetimes, PostgreSQL aware ones in the session's zone: hash them as UTC."""
    aware = at if at.tzinfo else at.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="microseconds")


def _payload(seq: int, at: str, actor: str, action: str, subject: str, detail: Any, prev_hash: str) -> bytes:
    return orjson.dumps([seq, at, actor, action, subject, detail, prev_hash], option=orjson.OPT_SORT_KEYS)


def entry_view(row: AuditEntry) -> dict[str, Any]:
    return {"seq": row.seq, "at": _iso(row.at), "actor": row.actor, "action": row.action,
            "subject": row.subject, "detail": row.detail, "prev_hash": row.prev_hash, "hash": row.hash}


class Sealer:
    """Computes an entry's hash: plain SHA-256, or HMAC-SHA256 under the configured key."""

    def __init__(self, key: bytes | None) -> None:
        self.key = key

    def seal(self, payload: bytes) -> str:
        if self.key is None:
            return hashlib.sha256(payload).hexdigest()
        return hmac.new(self.key, payload, hashlib.sha256).hexdigest()

    def kind(self, e: dict[str, Any], seq: int | None = None) -> str | None:
        """``"plain"`` or ``"keyed"`` when the entry's hash matches its contents (at ``seq``, default its own)."""
        payload = _payload(e["seq"] if seq is None else seq, e["at"], e["actor"], e["action"], e["subject"],
                           e["detail"], e["prev_hash"])
        if hmac.compare_digest(hashlib.sha256(payload).hexdigest(), e["hash"]):
            return "plain"
        if self.key is not None and hmac.compare_digest(self.seal(payload), e["hash"]):
            return "keyed"
        return None


class AuditLog:
    def __init__(self, engine: Engine, hmac_key: str | None = None) -> None:
        self.engine = engine
        self.sealer = Sealer(hmac_key.encode() if hmac_key else None)

    @property
    def keyed(self) -> bool:
        return self.sealer.key is not None

    async def record(self, actor: str, action: str, subject: str, detail: dict[str, Any] | None = None) -> None:
        """``append`` off the event loop, for admin handlers."""
        await asyncio.to_thread(self.append, actor, action, subject, detail)

    def append(self, actor: str, action: str, subject: str, detail: dict[str, Any] | None = None, *,
               session: Session | None = None) -> dict[str, Any]:
        """Add one entry at the head of the chain (in ``session``'s transaction when given: it commits with
        the change it records, or not at all)."""
        fields = {"actor": actor, "action": action, "subject": subject}
        fields = {k: v[:WIDTHS[k]] for k, v in fields.items()}
        # what is stored is what was hashed: the JSON column's round trip must not change it
        clean = orjson.loads(orjson.dumps(detail or {}, default=str, option=orjson.OPT_NON_STR_KEYS))
        if session is not None:
            return self._append(session, fields, clean)
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            return self._append(s, fields, clean)

    def _append(self, s: Session, fields: dict[str, str], detail: dict[str, Any]) -> dict[str, Any]:
        sqlite = s.get_bind().dialect.name == "sqlite"
        if sqlite:  # an empty UPDATE takes the database write lock before the head is read: no race
            s.execute(update(AuditEntry).where(false()).values(seq=AuditEntry.seq))
        for _ in range(RETRIES):
            row = self._next(s, fields, detail)
            if sqlite:
                s.add(row)
                s.flush()
                return entry_view(row)
            try:
                with s.begin_nested():  # PostgreSQL: another replica took this seq; retry on the new head
                    s.add(row)
                return entry_view(row)
            except IntegrityError:
                log.debug("audit seq %d taken by another writer; retrying", row.seq)
        raise InternalError(f"audit log: could not append after {RETRIES} attempts (too many concurrent writers)")

    def _next(self, s: Session, fields: dict[str, str], detail: dict[str, Any]) -> AuditEntry:
        head = s.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).first()
        self._check_head(head)
        seq = head.seq + 1 if head else 1
        prev = head.hash if head else GENESIS
        at = datetime.now(UTC)
        digest = self.sealer.seal(_payload(seq, _iso(at), fields["actor"], fields["action"], fields["subject"],
                                           detail, prev))
        return AuditEntry(seq=seq, at=at, detail=detail, prev_hash=prev, hash=digest, **fields)

    def check_writable(self) -> None:
        """Refuse early (before a change is made) when this log is keyed and no key is configured here."""
        with Session(self.engine) as s:
            self._check_head(s.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).first())

    def _check_head(self, head: AuditEntry | None) -> None:
        if head is not None and not self.keyed and self.sealer.kind(entry_view(head)) != "plain":
            raise ConfigError("the audit log is sealed with an HMAC key: set audit.hmac_key "
                              "(STRATA_AUDIT__HMAC_KEY) to the gateway's to make changes")

    def start_signing(self) -> None:
        """With a key, make sure the newest entry is keyed (so a tail rewritten without the key is caught)."""
        if not self.keyed:
            return
        with Session(self.engine) as s:
            head = s.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).first()
            head_kind = self.sealer.kind(entry_view(head)) if head else None
        if head_kind != "keyed":
            self.append("strata", "audit.signing", "audit", {"after_seq": head.seq if head else 0})

    # -- reading ----------------------------------------------------------------------------------------

    def entries(self, since: datetime | None = None, action: str | None = None,
                limit: int | None = None, newest_first: bool = False) -> list[dict[str, Any]]:
        return list(self.iter_entries(since, action, limit, newest_first))

    def iter_entries(self, since: datetime | None = None, action: str | None = None, limit: int | None = None,
                     newest_first: bool = False) -> Iterator[dict[str, Any]]:
        q = select(AuditEntry).order_by(AuditEntry.seq.desc() if newest_first else AuditEntry.seq)
        if since is not None:
            q = q.where(AuditEntry.at >= since)
        if action is not None:
            q = q.where(AuditEntry.action == action)
        if limit is not None:
            q = q.limit(limit)
        with Session(self.engine) as s:
            for row in s.scalars(q.execution_options(yield_per=1000)):
                yield entry_view(row)

    def export(self, out: IO[str], since: datetime | None = None) -> int:
        """Write entries as JSON lines, oldest first (each line verifiable offline); returns how many."""
        n = 0
        for e in self.iter_entries(since):
            out.write(orjson.dumps(e).decode() + "\n")
            n += 1
        return n

    def verify(self) -> Verdict:
        return verify_entries(self.iter_entries(), self.sealer)


def verify_entries(entries: Iterable[dict[str, Any]], sealer: Sealer, partial: bool = False) -> Verdict:
    """Walk the chain from seq 1 (``partial``: from the first entry given, an export ``--since``); the first
    problem found ends the walk."""
    walker = _Walk(sealer)
    for e in entries:
        if partial and walker.count == 0:
            walker.seq, walker.prev = e["seq"] - 1, e["prev_hash"]
        if (problem := walker.step(e)) is not None:
            return walker.verdict(problem)
    if walker.keyed_from is None and sealer.key is not None and walker.count:
        return walker.verdict(Problem(walker.seq, "unsigned", "no entry is sealed with the audit key: the log "
                                      "was rewritten without it (a gateway with the key seals its head on start)"))
    return walker.verdict(None)


class _Walk:
    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer
        self.seq = 0
        self.prev = GENESIS
        self.count = 0
        self.keyed_from: int | None = None
        self.hashes: dict[str, int] = {}  # hash -> seq of the latest entries, to name where one came from

    def step(self, e: dict[str, Any]) -> Problem | None:
        expected = self.seq + 1
        if e["seq"] != expected:
            missing = f"entry {expected} is" if e["seq"] == expected + 1 else \
                f"entries {expected} to {e['seq'] - 1} are"
            return Problem(expected, "deleted", f"{missing} missing: entry {e['seq']} follows entry {self.seq}")
        kind = self.sealer.kind(e)
        if kind is None:
            return self._mismatch(e)
        if e["prev_hash"] != self.prev:
            where = self.hashes.get(e["prev_hash"])
            named = f"entry {where}" if where is not None else "an entry that is not in the log"
            return Problem(e["seq"], "deleted", f"its prev_hash names {named}, not entry {self.seq}: "
                           "an entry before it was deleted (and the rest renumbered) or replaced")
        if kind == "keyed" and self.keyed_from is None:
            self.keyed_from = e["seq"]
        elif kind == "plain" and self.keyed_from is not None:
            return Problem(e["seq"], "unsigned", f"not sealed with the audit key although entries from "
                           f"{self.keyed_from} are: written (or rewritten) by someone without the key")
        self.seq, self.prev = e["seq"], e["hash"]
        self.hashes[e["hash"]] = e["seq"]
        if len(self.hashes) > RECENT:
            del self.hashes[next(iter(self.hashes))]
        self.count += 1
        return None

    def _mismatch(self, e: dict[str, Any]) -> Problem:
        """The hash does not match the contents at this seq: moved here from another seq, or edited."""
        seq = e["seq"]
        candidates = {seq - 1, seq + 1}
        if (before := self.hashes.get(e["prev_hash"])) is not None:
            candidates.add(before + 1)
        candidates |= set(range(max(1, seq - 64), seq + 65))  # a swap within reach; beyond, "edited"
        for j in sorted(candidates - {seq}, key=lambda j: abs(j - seq)):
            if j >= 1 and self.sealer.kind(e, j) is not None:
                return Problem(seq, "reordered", f"this entry was written as entry {j} "
                               f"({e['action']} {e['subject']} by {e['actor']}): entries were swapped or renumbered")
        hint = "" if self.sealer.key else " (or it was sealed with an audit key that is not configured here)"
        return Problem(seq, "edited", f"its hash does not match its contents{hint}: "
                       f"{e['action']} {e['subject']} by {e['actor']} at {e['at']}")

    def verdict(self, problem: Problem | None) -> Verdict:
        return Verdict(problem is None, self.count, self.seq, self.prev, self.keyed_from, problem)


def audit_log(settings: Settings, engine: Engine) -> AuditLog:
    """The audit log of a database, sealed with ``audit.hmac_key`` when it is set."""
    key = settings.audit.hmac_key
    return AuditLog(engine, key.get_secret_value() if key else None)
