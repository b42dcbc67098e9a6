"""Unit tier: the circuit breaker's state machine (with a driven clock) and the balancer's choices."""

from __future__ import annotations

import random
from collections import Counter

from strata.config.settings import BreakerConfig
from strata.routing.balancer import Candidate, pick
from strata.routing.breaker import CLOSED, HALF_OPEN, OPEN, Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **kw: float) -> Breaker:
    return Breaker(BreakerConfig(**{"consecutive_failures": 3, "cooldown": 5, "cooldown_max": 30, **kw}), clock)


def test_consecutive_failures_eject_then_half_open_probe_closes() -> None:
    clock = Clock()
    b = breaker(clock)
    b.failure()
    b.failure()
    assert b.state == CLOSED and b.available()
    b.failure()
    assert b.state == OPEN and not b.available()
    assert b.retry_after() == 5
    clock.now += 5
    assert b.state == HALF_OPEN and b.available()
    b.begin()
    assert not b.available(), "only one probe at a time while half-open"
    b.success()
    assert b.state == CLOSED and b.available()


def test_cooldown_doubles_on_repeated_ejection_and_caps() -> None:
    clock = Clock()
    b = breaker(clock, consecutive_failures=1)
    waits = []
    for _ in range(5):
        b.failure()
        waits.append(b.retry_after())
        clock.now += b.retry_after()
        assert b.state == HALF_OPEN
        b.begin()
    assert waits == [5, 10, 20, 30, 30]
    b.success()
    b.failure()
    assert b.retry_after() == 5, "a recovered deployment starts from the initial cool-down again"


def test_error_rate_in_window_ejects_even_without_a_streak() -> None:
    clock = Clock()
    b = breaker(clock, consecutive_failures=100, error_rate=0.5, min_requests=10, window=30)
    for i in range(12):
        b.success() if i % 3 == 0 else b.failure()  # 2 of 3 fail, never 100 in a row
        clock.now += 1
    assert b.state == OPEN


def test_old_outcomes_leave_the_window() -> None:
    clock = Clock()
    b = breaker(clock, consecutive_failures=100, error_rate=0.5, min_requests=4, window=10)
    for _ in range(3):
        b.failure()
        b.success()
    clock.now += 60
    for _ in range(4):
        b.success()
    b.failure()
    assert b.state == CLOSED


def test_p2c_prefers_the_less_loaded_deployment() -> None:
    rng = random.Random(7)
    cands = [Candidate("busy", 1, 10), Candidate("idle", 1, 0)]
    picks = Counter(pick(cands, "least-outstanding", None, rng).name for _ in range(1000))
    assert picks["idle"] > picks["busy"] * 2


def test_weighted_random_follows_weights() -> None:
    rng = random.Random(7)
    cands = [Candidate("a", 3, 0), Candidate("b", 1, 0)]
    picks = Counter(pick(cands, "weighted", None, rng).name for _ in range(4000))
    assert 0.70 < picks["a"] / 4000 < 0.80


def test_affinity_is_stable_and_moves_only_the_users_of_a_removed_deployment() -> None:
    rng = random.Random(7)
    three = [Candidate(n, 1, 0) for n in ("a", "b", "c")]
    before = {f"user{i}": pick(three, "least-outstanding", f"user{i}", rng).name for i in range(300)}
    assert before == {u: pick(three, "least-outstanding", u, rng).name for u in before}
    assert len(set(before.values())) == 3
    two = [c for c in three if c.name != "c"]
    after = {u: pick(two, "least-outstanding", u, rng).name for u in before}
    moved = {u for u in before if before[u] != after[u]}
    assert moved == {u for u in before if before[u] == "c"}
