"""Outlier detection that one caller cannot weaponise (after Envoy's outlier detection).

Three rules keep a single caller from taking a route down for everyone:

- **Evidence, not attempts.** A request that failed on every deployment it tried is one failure, not
  one per attempt. It counts against a deployment only when nobody else was served there recently; when
  the deployment served another caller within the breaker ``window``, the failure belongs to the request
  (and its key), not to the deployment. A request that failed on one deployment and was served by another
  is clear evidence against the first: each of its failed attempts counts, as before.
- **Callers are slowed down.** A key whose requests keep failing that way (``caller_failures`` within the
  window) gets 429 with ``Retry-After`` on that route for a cool-down that doubles on each repeat (the
  breaker's ``cooldown`` .. ``cooldown_max``), and one ``caller_throttled`` event.
- **Panic, never none.** When every deployment of a route is ejected, a request still goes to one of its
  primaries (once, no retries) instead of getting 503: see ``Attempts.next``.

The clock is injectable so tests drive time instead of sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from strata.routing.config import BreakerConfig


@dataclass(slots=True)
class Served:
    """The most recent success by each of the two latest distinct callers of one deployment.

    Two slots are enough to answer "when did a caller other than K last get an answer here?" for any K.
    """

    key: str | None = None
    at: float = float("-inf")
    prev_key: str | None = None
    prev_at: float = float("-inf")

    def record(self, key: str | None, now: float) -> None:
        if key != self.key:
            self.prev_key, self.prev_at = self.key, self.at
            self.key = key
        self.at = now

    def by_other_since(self, key: str | None, since: float) -> bool:
        last = self.prev_at if key == self.key else self.at
        return last >= since


@dataclass(slots=True)
class _Caller:
    failures: deque[float] = field(default_factory=deque)
    until: float = 0.0
    cooldown: float = 0.0


class CallerOutliers:
    """Per (route, key): failures attributed to the caller, and the throttle they earned."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._callers: dict[tuple[str, str], _Caller] = {}

    def retry_after(self, route: str, key: str) -> float:
        """Seconds this key must wait on this route; 0 when it is not throttled."""
        if not self._callers:
            return 0.0
        caller = self._callers.get((route, key))
        return max(0.0, caller.until - self.clock()) if caller is not None else 0.0

    def failed(self, route: str, key: str, cfg: BreakerConfig) -> float | None:
        """Count a failure that belongs to the caller; the cool-down when it just earned a throttle."""
        if cfg.caller_failures == 0:
            return None
        now = self.clock()
        caller = self._callers.setdefault((route, key), _Caller())
        caller.failures.append(now)
        while caller.failures and caller.failures[0] < now - cfg.window:
            caller.failures.popleft()
        on_probation = caller.cooldown > 0 and now >= caller.until  # throttled before: one more failure repeats it
        if len(caller.failures) < cfg.caller_failures and not on_probation:
            return None
        caller.cooldown = min(caller.cooldown * 2, cfg.cooldown_max) if caller.cooldown else cfg.cooldown
        caller.until = now + caller.cooldown
        caller.failures.clear()
        return caller.cooldown

    def succeeded(self, route: str, key: str) -> None:
        """A served request clears the caller's record on that route."""
        if self._callers:
            self._callers.pop((route, key), None)

    def throttled(self) -> dict[str, dict[str, float]]:
        """route -> key -> seconds left, for the engine view."""
        now = self.clock()
        out: dict[str, dict[str, float]] = {}
        for (route, key), caller in self._callers.items():
            if caller.until > now:
                out.setdefault(route, {})[key] = round(caller.until - now, 1)
        return out
