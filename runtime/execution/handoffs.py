"""One worker's handoffs: where its idle claims park it, which handed-over jobs it starts
and which it releases, and the lost ones its heartbeat adopts.

Enqueue leases a new job straight to a parked worker and publishes it on the worker's
channel (enqueue.lua); the dispatcher passes the message to ``accept``. A message may come
late (a healed partition): the job runs only if its lease outlasts the next heartbeat,
judged on Redis's clock as estimated from claim replies. A message may never come: the
heartbeat adopts the job (leases.py) while a park could still be alive. A job that cannot
run here now goes back to the front of its lane (fenced: harmless if already reclaimed).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from runtime.config.schema import WorkerSettings
from runtime.execution.breaker import BreakerKeeper
from runtime.execution.counters import WorkerCounters
from runtime.execution.held import HeldLeases, Lease
from runtime.jobs.records import ClaimedJob
from runtime.observe.metrics import FunctionMetrics

MAX_STARTED_REMEMBERED = 10_000


class RedisClock:
    """Redis time as this worker estimates it from claim replies: never later than the
    truth, since a reply's transit only makes the offset smaller (the largest offset seen
    lately is the closest)."""

    def __init__(self) -> None:
        self._offset_ms = -math.inf  # Redis time - monotonic time
        self._seen_at_ms = -math.inf

    def observe(self, redis_now_ms: int) -> None:
        local = time.monotonic() * 1000
        offset = redis_now_ms - local
        if offset > self._offset_ms or local - self._seen_at_ms > 30_000:
            self._offset_ms, self._seen_at_ms = offset, local

    def now_ms(self) -> float:
        return time.monotonic() * 1000 + self._offset_ms


class Handoffs:
    def __init__(
        self,
        settings: WorkerSettings,
        *,
        held: HeldLeases,
        stop: asyncio.Event,
        free_slots: Callable[[], int],
        breaker: BreakerKeeper,
        counters: WorkerCounters,
        metrics: FunctionMetrics | None,
        start: Callable[[ClaimedJob, int], None],
        release: Callable[[ClaimedJob], None],
    ) -> None:
        # The dispatcher's handoff channel (set by it), and the same while it is subscribed
        # ("" otherwise): an idle claim parks this worker on park_channel, and enqueue
        # leases new jobs straight to it.
        self.channel = ""
        self.park_channel = ""
        self.park_ttl_ms = round((settings.idle_poll_s + 1.0) * 1000)
        self.clock = RedisClock()
        self._parked_at = -1e9  # monotonic time of the last claim that could park
        # A job handed over while parked may have lost its message: look for such jobs
        # until one lease after the last park could have ended.
        self._adoption_window_s = settings.lease_s + self.park_ttl_ms / 1000
        # A handed-over job is run only while its lease outlasts the next heartbeat.
        self._max_age_ms = settings.lease_ms - round(settings.heartbeat_s * 1000)
        # The handoff leases started here, by message or by adoption, oldest first: a
        # handoff is a job's first lease, so once started here it never starts here again,
        # whichever of its message and a heartbeat's adoption comes late (even after the
        # run ended and its lease is no longer held).
        self._started: dict[Lease, None] = {}
        self._held = held  # the worker's leases, from claim until settled
        self._stop = stop  # set by a drain: start no more
        self._free_slots = free_slots
        self._breaker = breaker
        self._counters = counters
        self._metrics = metrics
        self._start = start  # runs a job in a free slot
        self._release = release  # puts a job back at the front of its lane

    def allow_parking(self, allowed: bool) -> None:
        self.park_channel = self.channel if allowed else ""

    def park(self) -> str:
        """The channel for a claim that may park this worker ("" while parking is off)."""
        if self.park_channel:
            self._parked_at = time.monotonic()
        return self.park_channel

    def adoption_channel(self) -> str:
        """The channel whose lost handoffs a heartbeat adopts ("" if no park is recent)."""
        recent = time.monotonic() - self._parked_at <= self._adoption_window_s
        return self.channel if recent else ""

    def accept(self, job: ClaimedJob, now_ms: int, *, adopted: bool = False) -> None:
        """See ``FunctionWorker.accept``."""
        lease = (job.id, job.token)
        if self._held.token_of(job.id) is not None:
            # Adopted by a heartbeat already (its message came late), or claimed since
            # with a newer token: a handoff is always a job's first lease.
            return
        if lease in self._started:
            return  # started here already (message or adoption) and ended: never run twice
        if (
            (not adopted and self.clock.now_ms() - now_ms > self._max_age_ms)
            or self._stop.is_set()
            or self._free_slots() <= 0
            or not self._breaker.is_closed
        ):
            self._counters.handoffs_refused += 1
            if self._metrics is not None:
                self._metrics.handoff_released.inc()
            self._release(job)
            return
        self._counters.handoffs += 1
        if self._metrics is not None:
            self._metrics.handoff_started.inc()
        self._started[lease] = None
        while len(self._started) > MAX_STARTED_REMEMBERED:
            del self._started[next(iter(self._started))]
        self._start(job, now_ms)

    def has_started(self, lease: Lease) -> bool:
        """This handoff lease was started here already (by its message or an adoption)."""
        return lease in self._started

    def adopt(self, job: ClaimedJob) -> None:
        """Accept a job the heartbeat found handed to this worker, its message lost; the
        message arriving after all will not run it again."""
        self.accept(job, job.ready_ms, adopted=True)
