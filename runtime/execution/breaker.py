"""Per-function circuit breaker: stop claiming a function whose handler keeps failing.

Closed: every attempt's outcome is recorded in a sliding window. When the window holds at
least ``min_samples`` outcomes and the failed share reaches ``failure_ratio``, the breaker
opens: the worker claims nothing for ``cooldown_s``, so a broken dependency is not
hammered and its jobs wait in Redis instead of burning their attempts. Then half-open:
exactly one job (the probe) is let through; its success closes the breaker (with a fresh
window), its failure opens it again for another cooldown.

The state is this process's (each instance judges what it sees); transitions are
reported to Redis for ``runtime stats``, to ``/readyz`` details and as the
``circuit_breaker_state`` gauge (``BreakerKeeper``, a worker's use of its breaker). The
clock is injected, so tests need no sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Literal

from runtime.errors import BrokerError
from runtime.execution.held import Lease
from runtime.execution.outages import OutageLog
from runtime.function import Breaker
from runtime.jobs.outcome import Crashed, Failed, Outcome
from runtime.jobs.records import ClaimedJob
from runtime.observe.metrics import FunctionMetrics
from runtime.queue.broker import RedisBroker

log = logging.getLogger("runtime.worker")  # the worker's parts log as the worker

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


class BreakerKeeper:
    """One worker's use of its breaker (if its function has one): how many jobs a claim may
    take, which job is the half-open breaker's probe, and each transition logged, gauged
    and reported to Redis. Without a breaker every claim is allowed in full."""

    def __init__(
        self,
        function: str,
        config: Breaker | None,
        broker: RedisBroker,
        *,
        metrics: FunctionMetrics | None,
        outages: OutageLog,
    ) -> None:
        self._name = function
        self._breaker = CircuitBreaker(config) if config else None
        self._broker = broker
        self._metrics = metrics
        self._outages = outages
        self._probe: Lease | None = None  # the half-open breaker's probe run
        self._report: asyncio.Task[None] | None = None

    @property
    def state(self) -> State | None:
        return self._breaker.state if self._breaker is not None else None

    @property
    def is_closed(self) -> bool:
        return self._breaker is None or self._breaker.state == "closed"

    @property
    def is_half_open(self) -> bool:
        return self._breaker is not None and self._breaker.state == "half_open"

    def allowed(self, wanted: int) -> int:
        return self._breaker.allowed(wanted) if self._breaker is not None else wanted

    def reopens_in_s(self) -> float:
        return self._breaker.reopens_in_s() if self._breaker is not None else 0.0

    def release_probe(self) -> None:
        """The probing claim failed: the next claim may probe."""
        if self._breaker is not None:
            self._breaker.release_probe()

    def probe_claimed(self, jobs: Sequence[ClaimedJob]) -> None:
        """The probing claim returned ``jobs``: the first is the probe, if any."""
        if self._breaker is None:
            return
        if jobs:
            self._probe = (jobs[0].id, jobs[0].token)
            log.warning("%s: circuit half-open: probing with job %s", self._name, jobs[0].id)
        else:
            self._breaker.release_probe()  # nothing to probe with yet

    def cancelled(self, lease: Lease) -> None:
        """A run ended without an outcome (released, lost): if it was the probe, allow another."""
        if lease == self._probe and self._breaker is not None:
            self._probe = None
            self._breaker.release_probe()

    def record(self, lease: Lease, outcome: Outcome) -> None:
        if self._breaker is None:
            return
        if lease == self._probe:
            self._probe = None
        failed = isinstance(outcome, Failed | Crashed)
        changed = self._breaker.record(failed)
        if changed is None:
            return
        if self._metrics is not None:
            self._metrics.breaker_state.set(STATE_VALUES[changed])
        if changed == "open":
            log.warning(
                "%s: circuit breaker OPEN: too many failures; no claims for %gs",
                self._name,
                self._breaker.config.cooldown_s,
            )
        else:
            log.warning("%s: circuit breaker closed: the probe succeeded", self._name)
        self._report = asyncio.create_task(self._report_state(changed))

    async def _report_state(self, state: str) -> None:
        """Best effort: show this instance's breaker in `runtime stats` (Redis)."""
        try:
            await self._broker.report_breaker(self._name, state)
        except BrokerError as exc:
            self._outages.note("breaker report", exc)
