"""Access control at retrieval: who asks (``Principal``) and who may read a document (its ACL tokens).

A document's ACL is a list of tokens such as ``team:t``, ``key:k``, ``user:u``, ``group:g``; an empty or absent
ACL means the owning team (``["team:<team>"]``). A principal may read a chunk when its tokens and the chunk's
ACL share at least one token. Every index backend filters by this inside the search, never after it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from strata.errors import InvalidRequest

KINDS = ("team", "key", "user", "group")


@dataclass(frozen=True)
class Principal:
    """The caller a search runs as."""

    team: str
    key_id: str | None = None
    user: str | None = None
    groups: frozenset[str] = field(default_factory=frozenset)

    def tokens(self) -> frozenset[str]:
        out = {f"team:{self.team}"}
        if self.key_id:
            out.add(f"key:{self.key_id}")
        if self.user:
            out.add(f"user:{self.user}")
        out.update(f"group:{g}" for g in self.groups)
        return frozenset(out)


def check_token(token: str) -> str:
    kind, sep, value = token.partition(":")
    if not sep or kind not in KINDS or not value:
        raise InvalidRequest(f"invalid ACL entry {token!r}: use team:NAME, key:ID, user:NAME or group:NAME",
                             param="acl")
    return token


def normalize_acl(team: str, acl: Iterable[str] | None) -> list[str]:
    """The stored ACL of a document: checked, deduplicated, sorted; empty means the owning team."""
    tokens = sorted({check_token(t) for t in (acl or ())})
    return tokens or [f"team:{team}"]


def readable(acl: Iterable[str], tokens: frozenset[str]) -> bool:
    return not tokens.isdisjoint(acl)
