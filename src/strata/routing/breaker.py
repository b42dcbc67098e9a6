"""Per-deployment circuit breaker: passive ejection with a growing cool-down, then half-open probing.

    closed --(N consecutive failures, or error rate over threshold in the window)--> open
    open --(cool-down elapsed)--> half-open: one probe request at a time
    half-open --(probe succeeds)--> closed (cool-down resets) | --(probe fails)--> open (cool-down doubles)
    open --(a panic request, sent while every deployment of the route is ejected, succeeds)--> closed

The clock is injectable so tests drive time instead of sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from strata.routing.config import BreakerConfig

CLOSED, HALF_OPEN, OPEN = "closed", "half-open", "open"


class Breaker:
    def __init__(self, cfg: BreakerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self._state = CLOSED
        self.consecutive = 0
        self.cooldown = cfg.cooldown
        self.open_until = 0.0
        self.probing = False
        self.ejections = 0
        self._outcomes: deque[tuple[float, bool]] = deque()

    @property
    def state(self) -> str:
        if self._state == OPEN and self.clock() >= self.open_until:
            self._state = HALF_OPEN
            self.probing = False
        return self._state

    def available(self) -> bool:
        """May a request be sent now? In half-open, only one probe at a time."""
        state = self.state
        return state == CLOSED or (state == HALF_OPEN and not self.probing)

    def begin(self) -> None:
        if self.state != CLOSED:  # a half-open probe, or a panic request to an ejected deployment
            self.probing = True

    def retry_after(self) -> float:
        return max(0.0, self.open_until - self.clock())

    def release(self) -> None:
        """The attempt ended without telling anything about health (e.g. the client left): free the probe."""
        self.probing = False

    def success(self) -> None:
        self._record(True)
        self.consecutive = 0
        state = self.state
        if state == HALF_OPEN or (state == OPEN and self.probing):
            self._state = CLOSED
            self.cooldown = self.cfg.cooldown
            self.probing = False

    def failure(self) -> None:
        self._record(False)
        self.consecutive += 1
        state = self.state
        if state == HALF_OPEN or (state == CLOSED and self._should_open()):
            self._open()

    def _record(self, ok: bool) -> None:
        now = self.clock()
        self._outcomes.append((now, ok))
        horizon = now - self.cfg.window
        while self._outcomes and self._outcomes[0][0] < horizon:
            self._outcomes.popleft()

    def _should_open(self) -> bool:
        if self.consecutive >= self.cfg.consecutive_failures:
            return True
        if len(self._outcomes) < self.cfg.min_requests:
            return False
        failures = sum(1 for _, ok in self._outcomes if not ok)
        return failures / len(self._outcomes) > self.cfg.error_rate

    def _open(self) -> None:
        self._state = OPEN
        self.open_until = self.clock() + self.cooldown
        self.cooldown = min(self.cooldown * 2, self.cfg.cooldown_max)
        self.probing = False
        self.ejections += 1
        self._outcomes.clear()
