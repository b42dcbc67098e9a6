"""Roles, permissions and scopes: what a key may do, and over which teams and routes.

A key has one role (``admin`` > ``operator`` > ``analyst`` > ``member``); each role grants a fixed set of
permissions (``PERMISSIONS``). Scopes narrow a key further: ``teams`` limits the team data it sees and the keys
it manages, ``routes`` limits the routes it may change. ``None`` means unscoped (all). The table of which
endpoint needs which permission is ``gateway.authz.RULES``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from strata.errors import InvalidRequest

ROLES = ("member", "analyst", "operator", "admin")  # lowest first: a key may only make keys of its rank or lower
RANK = {role: i for i, role in enumerate(ROLES)}

INFERENCE = "inference"
IDENTITY_ASSERT = "identity.assert"  # may name the end user (and groups) retrieval runs as (``gateway.caller``)
PERMISSIONS: dict[str, frozenset[str]] = {
    "member": frozenset({INFERENCE}),
    "analyst": frozenset({INFERENCE, "usage.read", "traces.read", "events.read", "rollouts.read", "audit.read"}),
    "operator": frozenset({INFERENCE, "usage.read", "events.read", "rollouts.read", "rollouts.write", "routes.read",
                           "routes.write", "engines.read", IDENTITY_ASSERT}),
}
# the model registry and evals: analysts read, operators write; approving a version is for admins only
PERMISSIONS["analyst"] |= {"models.read", "evals.read"}
# datasets and pipelines (strata.data): analysts read, operators write
PERMISSIONS["analyst"] |= {"datasets.read"}
PERMISSIONS["operator"] |= {"datasets.read", "datasets.write"}
PERMISSIONS["operator"] |= {"models.read", "models.write", "evals.read", "evals.write"}
ALL_PERMISSIONS = frozenset({
    *(p for perms in PERMISSIONS.values() for p in perms), "keys.read", "keys.write", "policies.read",
    "policies.write", "models.approve"})
PERMISSIONS["admin"] = ALL_PERMISSIONS


def role_of(role: str | None, is_admin: bool) -> str:
    """A stored role; keys made before roles existed have none: admin if they were admin keys, else member."""
    return role or ("admin" if is_admin else "member")


def check_role(role: str) -> str:
    if role not in RANK:
        raise InvalidRequest(f"unknown role {role!r}; the roles are {', '.join(ROLES)}", param="role")
    return role


@dataclass(frozen=True, slots=True)
class Scopes:
    """What a key is confined to: ``teams`` (team data and keys), ``routes`` (route changes); None = all."""

    teams: frozenset[str] | None = None
    routes: frozenset[str] | None = None

    @classmethod
    def of(cls, raw: dict[str, Any] | None) -> Scopes:
        """From the stored JSON (``api_keys.scopes``) or an admin API body."""
        if not raw:
            return UNSCOPED
        if not isinstance(raw, dict) or set(raw) - {"teams", "routes"}:
            raise InvalidRequest('scopes is an object with "teams" and/or "routes" lists', param="scopes")
        return cls(_names(raw.get("teams"), "teams"), _names(raw.get("routes"), "routes"))

    @classmethod
    def parse(cls, items: Iterable[str]) -> Scopes:
        """From the CLI's ``--scope team:NAME`` / ``--scope route:NAME`` (repeatable)."""
        teams: set[str] = set()
        routes: set[str] = set()
        for item in items:
            kind, _, name = item.partition(":")
            if kind not in ("team", "route") or not name:
                raise InvalidRequest(f"bad scope {item!r}: use team:NAME or route:NAME", param="scope")
            (teams if kind == "team" else routes).add(name)
        return cls(frozenset(teams) or None, frozenset(routes) or None)

    def to_json(self) -> dict[str, list[str]] | None:
        out = {k: sorted(v) for k, v in (("teams", self.teams), ("routes", self.routes)) if v is not None}
        return out or None

    def team_ok(self, team: str | None) -> bool:
        return self.teams is None or team in self.teams

    def route_ok(self, route: str) -> bool:
        return self.routes is None or route in self.routes

    def within(self, outer: Scopes) -> bool:
        """True when these scopes are no wider than ``outer`` (unscoped is the widest)."""
        return all(o is None or (mine is not None and mine <= o)
                   for mine, o in ((self.teams, outer.teams), (self.routes, outer.routes)))


UNSCOPED = Scopes()


def _names(value: Any, field: str) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise InvalidRequest(f"scopes.{field} must be a non-empty list of names", param="scopes")
    return frozenset(value)
