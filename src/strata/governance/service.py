"""Governance as one service of the application state: who may call (keys, auth, abuse caps), how much
(policies, the governor over shared counters) and the budget settlements still in flight."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from strata.governance.abuse import ConcurrencyCaps
from strata.governance.auth import Authenticator
from strata.governance.governor import Governor
from strata.governance.keys import KeyStore
from strata.governance.policies import PolicyStore
from strata.routing.outlier import CallerOutliers
from strata.state.shared import SharedState


@dataclass
class Governance:
    keys: KeyStore
    auth: Authenticator
    policies: PolicyStore
    governor: Governor
    shared: SharedState
    callers: CallerOutliers = field(default_factory=CallerOutliers)  # keys whose requests keep failing upstream
    caps: ConcurrencyCaps = field(default_factory=ConcurrencyCaps)  # each capped key's requests in flight
    settling: set[asyncio.Task[None]] = field(default_factory=set)  # budget settlements, awaited on stop
