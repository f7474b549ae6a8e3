"""Circuit breaker transitions with an injected clock (no sleeping)."""

from __future__ import annotations

import pytest

from runtime.execution.breaker import CircuitBreaker
from runtime.function import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, **kw: float) -> CircuitBreaker:
    config = Breaker(
        **{"failure_ratio": 0.5, "min_samples": 4, "window_s": 10, "cooldown_s": 5, **kw}
    )  # type: ignore[arg-type]
    return CircuitBreaker(config, clock)


def test_stays_closed_below_the_minimum_number_of_samples(clock: Clock) -> None:
    breaker = make(clock)
    for _ in range(3):
        assert breaker.record(failed=True) is None
    assert breaker.state == "closed"
    assert breaker.allowed(10) == 10


def test_opens_at_the_failure_ratio_and_claims_nothing(clock: Clock) -> None:
    breaker = make(clock)
    assert breaker.record(failed=False) is None
    assert breaker.record(failed=True) is None
    assert breaker.record(failed=False) is None
    assert breaker.record(failed=True) == "open"  # 2 of 4 = 0.5
    assert breaker.state == "open"
    assert breaker.allowed(10) == 0
    assert breaker.reopens_in_s() == 5
    clock.now += 2
    assert breaker.reopens_in_s() == 3


def test_old_failures_leave_the_window(clock: Clock) -> None:
    breaker = make(clock)
    for _ in range(3):
        breaker.record(failed=True)
    clock.now += 11  # the three failures are now older than window_s
    assert breaker.record(failed=True) is None
    assert breaker.state == "closed"


def test_half_open_lets_exactly_one_probe_through(clock: Clock) -> None:
    breaker = make(clock)
    for _ in range(4):
        breaker.record(failed=True)
    clock.now += 5
    assert breaker.state == "half_open"
    assert breaker.allowed(10) == 1
    assert breaker.allowed(10) == 0  # the probe is out
    assert breaker.record(failed=False) == "closed"
    assert breaker.allowed(10) == 10


def test_a_failed_probe_opens_again_for_a_full_cooldown(clock: Clock) -> None:
    breaker = make(clock)
    for _ in range(4):
        breaker.record(failed=True)
    clock.now += 5
    assert breaker.allowed(3) == 1
    clock.now += 1
    assert breaker.record(failed=True) == "open"
    assert breaker.reopens_in_s() == 5


def test_a_released_probe_can_be_replaced(clock: Clock) -> None:
    breaker = make(clock)
    for _ in range(4):
        breaker.record(failed=True)
    clock.now += 5
    assert breaker.allowed(1) == 1
    breaker.release_probe()  # the claim found nothing, or the probe was released
    assert breaker.allowed(1) == 1


def test_stragglers_while_open_do_not_change_it(clock: Clock) -> None:
    breaker = make(clock)
    for _ in range(4):
        breaker.record(failed=True)
    clock.now += 1
    assert breaker.record(failed=False) is None
    assert breaker.state == "open"
    assert breaker.reopens_in_s() == 4
