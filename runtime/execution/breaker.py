"""Per-function circuit breaker: stop claiming a function whose handler keeps failing.

Closed: every attempt's outcome is recorded in a sliding window. When the window holds at
least ``min_samples`` outcomes and the failed share reaches ``failure_ratio``, the breaker
opens: the worker claims nothing for ``cooldown_s``, so a broken dependency is not
hammered and its jobs wait in Redis instead of burning their attempts. Then half-open:
exactly one job (the probe) is let through; its success closes the breaker (with a fresh
window), its failure opens it again for another cooldown.

The state is this process's (each instance judges what it sees); transitions are
reported to Redis for ``runtime stats``, to ``/readyz`` details and as the
``circuit_breaker_state`` gauge. The clock is injected, so tests need no sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from runtime.function import Breaker

State = Literal["closed", "open", "half_open"]
STATE_VALUES: dict[State, int] = {"closed": 0, "open": 1, "half_open": 2}


class CircuitBreaker:
    def __init__(self, config: Breaker, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._outcomes: deque[tuple[float, bool]] = deque()  # (when, failed)
        self._failures = 0
        self._state: State = "closed"
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> State:
        if self._state == "open" and self._clock() - self._opened_at >= self.config.cooldown_s:
            self._state = "half_open"
            self._probing = False
        return self._state

    def reopens_in_s(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self.config.cooldown_s - (self._clock() - self._opened_at))

    def allowed(self, wanted: int) -> int:
        """How many jobs may be claimed now: all, none (open), or the one probe."""
        state = self.state
        if state == "closed":
            return wanted
        if state == "half_open" and not self._probing and wanted > 0:
            self._probing = True
            return 1
        return 0

    def record(self, failed: bool) -> State | None:
        """Record one attempt's outcome; returns the new state when it changed."""
        now = self._clock()
        state = self.state
        if state == "half_open":
            if self._probing:
                self._probing = False
                return self._open(now) if failed else self._close()
            return None  # an attempt claimed before the breaker opened: not the probe
        if state == "open":
            return None  # stragglers of the closed period do not extend the cooldown
        self._outcomes.append((now, failed))
        self._failures += failed
        horizon = now - self.config.window_s
        while self._outcomes and self._outcomes[0][0] < horizon:
            _, old = self._outcomes.popleft()
            self._failures -= old
        n = len(self._outcomes)
        if n >= self.config.min_samples and self._failures >= self.config.failure_ratio * n:
            return self._open(now)
        return None

    def release_probe(self) -> None:
        """The probe ended without an outcome (released at shutdown): allow another."""
        self._probing = False

    def _open(self, now: float) -> State:
        self._state = "open"
        self._opened_at = now
        self._outcomes.clear()
        self._failures = 0
        return "open"

    def _close(self) -> State:
        self._state = "closed"
        self._outcomes.clear()
        self._failures = 0
        return "closed"
