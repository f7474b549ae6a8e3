"""One worker's claim loop: batched claims sized to its free slots, with no busy polling.

Each claim asks for at most the free slots (and ``claim_batch``), as the breaker allows;
a claim that leaves room parks the worker for handoffs (handoffs.py). Between claims the
loop waits for a slot to free, for work (a wake message, a retry falling due, a slot freed
while the fleet cap held), for the rate limit, for the breaker, or at most ``idle_poll_s``.
Bad ids are never a reason to wait: a claim that stopped at its scan budget with ids left
(orphans of evicted hashes, corrupt records: dead-lettered by the script) is followed by
another at once. An empty queue is never rate limited (the script says so), so an idle
rate-limited worker waits for a wake like an unlimited one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from runtime.config.schema import WorkerSettings
from runtime.errors import BrokerCommandError, BrokerError
from runtime.execution.breaker import BreakerKeeper
from runtime.execution.counters import WorkerCounters
from runtime.execution.handoffs import Handoffs
from runtime.execution.outages import OutageLog
from runtime.function import FunctionOptions
from runtime.jobs.records import ClaimedJob
from runtime.observe.metrics import FunctionMetrics
from runtime.queue.broker import RedisBroker, new_claim_id

log = logging.getLogger("runtime.worker")
LOG_EVERY_S = 10.0  # bad ids and failed claims are logged at most this often


@dataclass(frozen=True, slots=True)
class ClaimEvents:
    """What the claim loop waits for, set by the worker and its parts."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)  # work may be ready
    slot_freed: asyncio.Event = field(default_factory=asyncio.Event)
    # A drain began: no more claims, nor handoffs started or adopted.
    stop: asyncio.Event = field(default_factory=asyncio.Event)


class Claimer:
    def __init__(
        self,
        function: str,
        options: FunctionOptions,
        broker: RedisBroker,
        settings: WorkerSettings,
        *,
        breaker: BreakerKeeper,
        handoffs: Handoffs,
        counters: WorkerCounters,
        metrics: FunctionMetrics | None,
        events: ClaimEvents,
        free_slots: Callable[[], int],
        start: Callable[[ClaimedJob, int], None],
        release: Callable[[ClaimedJob], None],
        outages: OutageLog,
    ) -> None:
        self._name = function
        self._options = options
        self._broker = broker
        self._settings = settings
        self._rate_interval_ms = options.rate_interval_ms
        self._breaker = breaker
        self._handoffs = handoffs
        self._counters = counters
        self._metrics = metrics
        self._events = events
        self._free_slots = free_slots
        self._start = start  # runs a claimed job in a free slot
        self._release = release  # puts a job back at the front of its lane
        self._outages = outages
        self.is_fleet_limited = False  # the last claim was cut by max_in_flight
        self.dead_lettered = 0  # bad ids the claims dead-lettered (no record, or corrupt)
        self._logged_at = -LOG_EVERY_S

    async def run(self) -> None:
        opts = self._options
        ev = self._events
        retry_s = 0.05
        claim_id = None  # kept across a failed call: its reply may be lost, not its effect
        while not ev.stop.is_set():
            free = self._free_slots()
            if free <= 0:
                ev.slot_freed.clear()
                await ev.slot_freed.wait()
                continue
            want = min(free, self._settings.claim_batch)
            allowed = self._breaker.allowed(want)
            if allowed == 0:  # open (or its probe is still running): claim nothing
                await self._pause(min(self._breaker.reopens_in_s() or 0.5, 0.5))
                continue
            probing = self._breaker.is_half_open  # this claim is the probe
            want = allowed
            ev.wake.clear()
            claim_id = claim_id or new_claim_id()
            # Park only where a handoff could start at once: not probing or paused by the
            # breaker (accept() would release every job), not rate-limited (the claim
            # spends the tokens; enqueue does not).
            park = "" if probing or self._rate_interval_ms > 0 else self._handoffs.park()
            try:
                claim = await self._broker.claim(
                    self._name,
                    want,
                    claim_id=claim_id,
                    lease_ms=self._settings.lease_ms,
                    max_in_flight=opts.max_in_flight,
                    rate_interval_ms=self._rate_interval_ms,
                    rate_burst=opts.rate_burst,
                    park_channel=park,
                    park_ttl_ms=self._handoffs.park_ttl_ms,
                )
            except BrokerError as exc:
                # Unavailable, or an error reply (a key of the wrong type, OOM): back off and
                # try again; the loop never ends on what Redis answers.
                if probing:
                    self._breaker.release_probe()
                if isinstance(exc, BrokerCommandError):
                    self._log_rarely("%s: claim refused by Redis: %s", self._name, exc)
                else:
                    self._outages.note("claim", exc)
                await self._sleep(retry_s)
                retry_s = min(retry_s * 2, 2.0)
                continue
            retry_s = 0.05
            claim_id = None  # answered: the next claim is a new one
            if claim.dead or claim.unreadable:
                self.dead_lettered += claim.dead
                self._log_rarely(
                    "%s: a claim dead-lettered %d bad id(s) (no job record, or a corrupt one: "
                    "see `runtime peek --dlq`) and could not read %d; %d dead-lettered so far",
                    self._name, claim.dead, claim.unreadable, self.dead_lettered,
                )  # fmt: skip
            self._handoffs.clock.observe(claim.now_ms)
            self.is_fleet_limited = claim.is_fleet_limited
            if probing:
                self._breaker.probe_claimed(claim.jobs)
            for job in claim.jobs:
                if self._free_slots() > 0:
                    self._start(job, claim.now_ms)
                else:
                    # Handoffs took the slots this claim was sized for while it was on the
                    # wire: the job goes back to the front of its lane, not over the limit.
                    self._counters.released += 1
                    self._release(job)
            if len(claim.jobs) >= want or claim.has_more:
                continue  # full, or stopped early by bad ids with more left: claim again
            if claim.rate_ready_ms >= 0:
                # Rate-limited: sleep until the next start is allowed, plus a little jitter
                # so a fleet does not wake in lockstep (no claim in between: it would fail).
                if self._metrics is not None:
                    self._metrics.rate_limit_hits.inc()
                self._counters.rate_limited += 1
                wait_s = max(0.0, (claim.rate_ready_ms - claim.now_ms) / 1000)
                jitter = random.uniform(0, min(0.005, self._rate_interval_ms / 10_000))  # noqa: S311 — jitter, not a secret
                await self._pause(wait_s + jitter)
                continue
            timeout = self._settings.idle_poll_s
            if claim.is_fleet_limited:
                # Slots held by other instances free without telling us: look again soon.
                timeout = min(timeout, 0.05 + random.uniform(0, 0.05))  # noqa: S311 — jitter, not a secret
            if claim.next_due_ms >= 0:
                due_in = (claim.next_due_ms - claim.now_ms) / 1000
                timeout = max(0.001, min(timeout, due_in))
            await self._sleep(timeout)

    def _log_rarely(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning(message, *args)

    async def _pause(self, timeout_s: float) -> None:
        """Sleep ``timeout_s``, waking early only to stop (not for new work)."""
        if self._events.stop.is_set():
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self._events.stop.wait()
        except TimeoutError:
            pass

    async def _sleep(self, timeout_s: float) -> None:
        """Sleep until woken (work ready, slot freed while fleet-limited, stop) or timeout."""
        if self._events.stop.is_set():
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self._events.wake.wait()
        except TimeoutError:
            pass
