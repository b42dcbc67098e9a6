"""Abuse limits that rate limits do not catch: requests held at once by one key, and key guessing by one IP.

- ``ConcurrencyCaps``: a key's ``max_concurrency`` bounds its requests in flight on this replica (a stream
  counts until it ends or its client leaves); one more is a 429 ``concurrency_limit``. The ``admit`` stage
  takes the slot and its way out gives it back, on every path.
- ``AuthLockout``: ``abuse.auth_failures`` failed authentications from one IP within ``abuse.auth_window``
  lock that IP out for ``abuse.auth_lockout`` seconds: every request from it gets 429
  ``too_many_auth_failures``, *even with a valid key*, or guessing would go on with the valid answer as the
  oracle. The IP is the peer's, or the one ``X-Forwarded-For`` names when the peer is a trusted proxy.

Both are per replica, in memory: no database or Redis round trip on the hot path.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from collections.abc import Callable

from strata.errors import RateLimited
from strata.governance.config import AbuseSettings

MAX_TRACKED_IPS = 100_000  # failing IPs remembered at once; beyond, the oldest entries are dropped


class ConcurrencyCaps:
    def __init__(self) -> None:
        self._held: dict[str, int] = {}

    def acquire(self, key_id: str, cap: int) -> None:
        held = self._held.get(key_id, 0)
        if held >= cap:
            raise RateLimited(f"This key already has {held} requests in flight, its limit (max_concurrency "
                              f"{cap}); retry when one finishes.", code="concurrency_limit", retry_after=1)
        self._held[key_id] = held + 1

    def release(self, key_id: str) -> None:
        held = self._held.get(key_id, 0) - 1
        if held > 0:
            self._held[key_id] = held
        else:
            self._held.pop(key_id, None)

    def held(self, key_id: str) -> int:
        return self._held.get(key_id, 0)


class AuthLockout:
    def __init__(self, cfg: AbuseSettings, on_lockout: Callable[[str, int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.on_lockout = on_lockout  # (ip, failures): an operator event / audit entry, once per lockout
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._locked: dict[str, float] = {}  # ip -> until
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in cfg.trusted_proxies]

    def check(self, ip: str) -> None:
        """Refuse a locked-out IP (429 with the seconds left)."""
        until = self._locked.get(ip)
        if until is None:
            return
        left = until - self.clock()
        if left <= 0:
            del self._locked[ip]
            return
        raise RateLimited(f"Too many failed authentications from this address; retry in {left:.0f}s.",
                          code="too_many_auth_failures", retry_after=left)

    def failed(self, ip: str) -> None:
        now = self.clock()
        window = self._failures.get(ip)
        if window is None:
            if len(self._failures) >= MAX_TRACKED_IPS:
                self._failures.pop(next(iter(self._failures)))
            window = self._failures[ip] = deque()
        window.append(now)
        while window and window[0] <= now - self.cfg.auth_window:
            window.popleft()
        if len(window) >= self.cfg.auth_failures:
            del self._failures[ip]
            self._locked[ip] = now + self.cfg.auth_lockout
            if self.on_lockout is not None:
                self.on_lockout(ip, self.cfg.auth_failures)

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str:
        """The caller's address: the peer, or (when the peer is a trusted proxy) the last address in
        ``X-Forwarded-For`` that is not a trusted proxy itself."""
        ip = peer or "unknown"
        if not self.proxies or not forwarded_for or not self._trusted(ip):
            return ip
        for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
            if not self._trusted(hop):
                return hop
            ip = hop
        return ip

    def _trusted(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.proxies)
