"""Who a retrieval runs as: the key (its team and id) plus, for keys trusted to assert it, the end user.

An application backend that serves many users with one key names the user in ``X-Strata-User`` (or OpenAI's
``user`` field) and their groups in ``X-Strata-Groups`` (comma-separated). Only keys whose role has the
``identity.assert`` permission (operator, admin) are believed: any other key that sends the headers gets a
403, and its ``user`` field stays what OpenAI defines it as (an abuse-tracking label), never an identity. So
a member key can never read a document shared only with ``user:alice`` by claiming to be alice.
"""

from __future__ import annotations

import re

from starlette.datastructures import Headers

from strata.errors import InvalidRequest, PermissionDenied
from strata.governance.keys import Principal
from strata.governance.roles import IDENTITY_ASSERT
from strata.rag.acl import Principal as Reader

USER_HEADER = "x-strata-user"
GROUPS_HEADER = "x-strata-groups"
_NAME = re.compile(r"^[A-Za-z0-9_.@+:-]{1,200}$")


def reader(principal: Principal, headers: Headers, user_field: str | None = None) -> Reader:
    """The retrieval principal of a request made with ``principal``'s key."""
    user, groups = headers.get(USER_HEADER), headers.get(GROUPS_HEADER)
    trusted = principal.can(IDENTITY_ASSERT)
    if (user is not None or groups is not None) and not trusted:
        raise PermissionDenied(f"This key may not assert an end-user identity (X-Strata-User/X-Strata-Groups); "
                               f"that needs the {IDENTITY_ASSERT!r} permission (roles operator, admin).",
                               code="identity_not_trusted")
    if trusted and user is None:
        user = user_field
    names = [g.strip() for g in (groups or "").split(",") if g.strip()]
    for value, param in ((user, "X-Strata-User"), *((g, "X-Strata-Groups") for g in names)):
        if value is not None and not _NAME.match(value):
            raise InvalidRequest(f"invalid end-user name {value!r}", param=param)
    return Reader(team=principal.team, key_id=principal.key_id, user=user or None, groups=frozenset(names))
