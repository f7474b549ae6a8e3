"""One function's worker: claims its jobs, runs them within its limits, settles outcomes.

It owns, for one function in this process: the claim loop (batched claims, no busy
polling; an idle claim parks the worker for handoffs, see ``accept``), the running jobs (at
most ``concurrency``; each attempt runs in ``attempt.Attempts``), the heartbeat that renews
their leases and adopts lost handoffs, the reclaimer of expired leases, and the coalesced
settle of finished jobs.

A job's slot is held from claim until its handler returns (or, for an abandoned thread,
until the thread really ends); its lease is renewed until its outcome is settled in Redis.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from runtime.config.settings import WorkerSettings
from runtime.errors import LeaseLost
from runtime.execution.attempt import Attempts
from runtime.execution.breaker import STATE_VALUES, CircuitBreaker
from runtime.execution.quarantine import Quarantine, is_suspect
from runtime.function import FunctionSpec
from runtime.jobs.outcome import (
    Completed,
    Crashed,
    DeadLetter,
    Failed,
    Outcome,
    backoff_delay_s,
)
from runtime.jobs.records import ClaimedJob
from runtime.jobs.settle import (
    Complete,
    Release,
    RetryLater,
    SendToDlq,
    SettleEntry,
    WorkerCrashed,
)
from runtime.observe.metrics import FunctionMetrics
from runtime.observe.tracing import Tracing
from runtime.queue.broker import REDIS_ERRORS, RedisBroker, new_claim_id

log = logging.getLogger("runtime.worker")
SETTLE_BATCH = 500


class WorkerCounters(msgspec.Struct):
    claimed: int = 0
    completed: int = 0
    retried: int = 0
    dead: int = 0
    released: int = 0
    stale_acks: int = 0  # settles refused by fencing: the lease had been reclaimed
    leases_lost: int = 0
    rate_limited: int = 0  # claims cut short by the rate limit
    handoffs: int = 0  # jobs enqueue leased straight to this parked worker (no claim call)
    handoffs_refused: int = 0  # of those, released at once: no free slot, stopping, breaker


class FunctionWorker:
    def __init__(
        self,
        spec: FunctionSpec,
        broker: RedisBroker,
        settings: WorkerSettings,
        *,
        params: Mapping[str, Any] | None = None,
        quarantine: Quarantine | None = None,
        metrics: FunctionMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.spec = spec
        self._metrics = metrics
        self._tracing = tracing or Tracing()
        self._quarantine = quarantine or Quarantine()
        self.name = spec.name
        self.counters = WorkerCounters()
        self._broker = broker
        self._settings = settings
        self._params = params or {}
        self._lease_ms = round(settings.lease_s * 1000)
        self._running = 0
        self._held: dict[str, str] = {}  # job id -> token, from claim until settled
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._waits: dict[str, int] = {}  # job id -> ms it waited ready before this claim
        self._lost: set[str] = set()
        self._pending: list[SettleEntry] = []
        self._flusher: asyncio.Task[None] | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._stopping = False  # no more claims
        self._closing = False  # heartbeat and reclaim loops end too
        self._stop_event = asyncio.Event()
        self._rate_interval_ms = spec.options.rate_interval_ms
        self._breaker = CircuitBreaker(spec.options.breaker) if spec.options.breaker else None
        self._probe: str | None = None  # the half-open breaker's probe job
        self._breaker_report: asyncio.Task[None] | None = None
        self._is_fleet_limited = False
        # The dispatcher's handoff channel (set by it), and the same while it is subscribed
        # ("" otherwise): an idle claim parks this worker on park_channel, and enqueue
        # leases new jobs straight to it.
        self.handoff_channel = ""
        self.park_channel = ""
        self._parked_at = -1e9  # monotonic time of the last claim that could park
        self._park_ttl_ms = round((settings.idle_poll_s + 1.0) * 1000)
        self._adopted: dict[str, None] = {}  # ids adopted by heartbeat, oldest first
        # A handed-over job is run only while its lease outlasts the next heartbeat.
        self._max_handoff_age_ms = self._lease_ms - round(settings.heartbeat_s * 1000)
        # Redis time - monotonic time, in ms, from claim replies (the largest seen lately
        # is the closest: a reply's transit only makes it smaller).
        self._clock_offset_ms = -math.inf
        self._clock_seen_at = -math.inf
        self._last_error_log = 0.0
        self._attempts = Attempts(
            spec,
            max_envelope_bytes=settings.max_envelope_bytes,
            extend_lease=self._extend_one,
            params=params,
            metrics=metrics,
            tracing=self._tracing,
        )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._claim_loop(), name=f"claim:{self.name}"),
            asyncio.create_task(self._heartbeat_loop(), name=f"heartbeat:{self.name}"),
            asyncio.create_task(self._reclaim_loop(), name=f"reclaim:{self.name}"),
        ]

    @property
    def is_alive(self) -> bool:
        return bool(self._loops) and not any(t.done() for t in self._loops)

    @property
    def running(self) -> int:
        return self._running

    def wake(self) -> None:
        self._wake.set()

    def accept(self, job: ClaimedJob, now_ms: int, *, adopted: bool = False) -> None:
        """Start a job enqueue leased to this parked worker at Redis time ``now_ms``; release
        it if it cannot run here now (no free slot, stopping, breaker not closed) or if its
        message came so late (a healed partition) that its lease may be gone before the next
        heartbeat: back to the front of its lane (fenced, so harmless if already reclaimed).
        """
        if job.id in self._held:
            return  # adopted by a heartbeat already (its message came late)
        if job.id in self._adopted:
            del self._adopted[job.id]
            return  # adopted and already finished: never run it twice
        breaker = self._breaker
        if (
            (not adopted and self._redis_now_ms() - now_ms > self._max_handoff_age_ms)
            or self._stopping
            or self._running >= self.spec.options.concurrency
            or (breaker is not None and breaker.state != "closed")
        ):
            self.counters.handoffs_refused += 1
            if self._metrics is not None:
                self._metrics.handoff_released.inc()
            self._release(job)
            return
        self.counters.handoffs += 1
        if self._metrics is not None:
            self._metrics.handoff_started.inc()
        self._start(job, now_ms)

    def _observe_redis_clock(self, redis_now_ms: int) -> None:
        local = time.monotonic() * 1000
        offset = redis_now_ms - local
        if offset > self._clock_offset_ms or local - self._clock_seen_at > 30_000:
            self._clock_offset_ms, self._clock_seen_at = offset, local

    def _redis_now_ms(self) -> float:
        """Redis time now as this worker estimates it (never later than the truth)."""
        return time.monotonic() * 1000 + self._clock_offset_ms

    def allow_parking(self, allowed: bool) -> None:
        """Whether this worker's idle claims park it on its handoff channel (the dispatcher
        allows it while its subscription is up, and un-parks it in Redis when it stops)."""
        self.park_channel = self.handoff_channel if allowed else ""

    async def drain(self, grace_s: float) -> None:
        """Stop claiming, let running jobs finish within ``grace_s``, release the rest now."""
        self._stopping = True
        self._stop_event.set()
        self._wake.set()
        self._slot_freed.set()
        claim_loop = self._loops[0] if self._loops else None
        if claim_loop is not None:
            await asyncio.wait({claim_loop}, timeout=self._settings.lease_s)
        tasks = set(self._tasks.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace_s)
            for task in late:
                task.cancel()  # each releases its job back to the front of its lane
            if late:
                await asyncio.wait(late, timeout=5.0)
        if self._flusher is not None:
            await asyncio.wait({self._flusher}, timeout=3 * self._settings.lease_s)
        # The loops also check _closing: a cancellation swallowed inside a Redis call
        # (seen with redis-py under load) must not keep them, or this drain, alive.
        self._closing = True
        for task in self._loops:
            task.cancel()
        await asyncio.wait(self._loops, timeout=max(2.0, self._settings.heartbeat_s))
        await self._attempts.close()
        if self._held:
            log.warning(
                "%s: %d job(s) not settled at shutdown; their leases expire and they run again",
                self.name,
                len(self._held),
            )

    # -- claiming ----------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        opts = self.spec.options
        retry_s = 0.05
        claim_id = None  # kept across a failed call: its reply may be lost, not its effect
        while not self._stopping:
            free = opts.concurrency - self._running
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            want = min(free, self._settings.claim_batch)
            probing = False
            if self._breaker is not None:
                allowed = self._breaker.allowed(want)
                if allowed == 0:  # open (or its probe is still running): claim nothing
                    await self._pause(min(self._breaker.reopens_in_s() or 0.5, 0.5))
                    continue
                probing = self._breaker.state == "half_open"  # this claim is the probe
                want = allowed
            self._wake.clear()
            claim_id = claim_id or new_claim_id()
            # Park only where a handoff could start at once: not probing or paused by the
            # breaker (accept() would release every job), not rate-limited (the claim
            # spends the tokens; enqueue does not).
            park = "" if probing or self._rate_interval_ms > 0 else self.park_channel
            if park:
                self._parked_at = time.monotonic()
            try:
                claim = await self._broker.claim(
                    self.name,
                    want,
                    claim_id=claim_id,
                    lease_ms=self._lease_ms,
                    max_in_flight=opts.max_in_flight,
                    rate_interval_ms=self._rate_interval_ms,
                    rate_burst=opts.rate_burst,
                    park_channel=park,
                    park_ttl_ms=self._park_ttl_ms,
                )
            except REDIS_ERRORS as exc:
                if probing and self._breaker is not None:
                    self._breaker.release_probe()
                self._log_redis_error("claim", exc)
                await self._sleep(retry_s)
                retry_s = min(retry_s * 2, 2.0)
                continue
            retry_s = 0.05
            claim_id = None  # answered: the next claim is a new one
            self._observe_redis_clock(claim.now_ms)
            self._is_fleet_limited = claim.is_fleet_limited
            if probing and self._breaker is not None:
                if claim.jobs:
                    self._probe = claim.jobs[0].id
                    log.warning(
                        "%s: circuit half-open: probing with job %s", self.name, self._probe
                    )
                else:
                    self._breaker.release_probe()  # nothing to probe with yet
            for job in claim.jobs:
                if self._running < opts.concurrency:
                    self._start(job, claim.now_ms)
                else:
                    # Handoffs took the slots this claim was sized for while it was on the
                    # wire: the job goes back to the front of its lane, not over the limit.
                    self.counters.released += 1
                    self._release(job)
            if len(claim.jobs) >= want:
                continue
            if claim.rate_ready_ms >= 0:
                # Rate-limited: sleep until the next start is allowed, plus a little jitter
                # so a fleet does not wake in lockstep (no claim in between: it would fail).
                if self._metrics is not None:
                    self._metrics.rate_limit_hits.inc()
                self.counters.rate_limited += 1
                wait_s = max(0.0, (claim.rate_ready_ms - claim.now_ms) / 1000)
                jitter = random.uniform(0, min(0.005, self._rate_interval_ms / 10_000))
                await self._pause(wait_s + jitter)
                continue
            timeout = self._settings.idle_poll_s
            if claim.is_fleet_limited:
                # Slots held by other instances free without telling us: look again soon.
                timeout = min(timeout, 0.05 + random.uniform(0, 0.05))
            if claim.next_due_ms >= 0:
                due_in = (claim.next_due_ms - claim.now_ms) / 1000
                timeout = max(0.001, min(timeout, due_in))
            await self._sleep(timeout)

    async def _pause(self, timeout_s: float) -> None:
        """Sleep ``timeout_s``, waking early only to stop (not for new work)."""
        if self._stopping:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self._stop_event.wait()
        except TimeoutError:
            pass

    async def _sleep(self, timeout_s: float) -> None:
        """Sleep until woken (work ready, slot freed while fleet-limited, stop) or timeout."""
        if self._stopping:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self._wake.wait()
        except TimeoutError:
            pass

    def _start(self, job: ClaimedJob, now_ms: int) -> None:
        self.counters.claimed += 1
        if self._metrics is not None:
            self._metrics.consumed.inc()
            self._metrics.queue_wait.observe(max(0, now_ms - job.ready_ms) / 1000)
        if self._tracing.enabled:  # only the span uses it (runtime.queue_wait_ms)
            self._waits[job.id] = max(0, now_ms - job.ready_ms)
        self._running += 1
        self._held[job.id] = job.token
        self._tasks[job.id] = asyncio.create_task(self._run(job))

    def _free_slot(self) -> None:
        self._running -= 1
        self._slot_freed.set()
        if self._is_fleet_limited:
            self._wake.set()

    # -- running -----------------------------------------------------------------------

    async def _run(self, job: ClaimedJob) -> None:
        suspect = is_suspect(job.recoveries, self.spec.options.max_recoveries)
        gate = self._quarantine.suspect() if suspect else self._quarantine.ordinary()
        try:
            async with gate:
                if suspect:
                    log.warning(
                        "%s: job %s was in flight in %d crashed runtime(s); running it alone",
                        self.name,
                        job.id,
                        job.recoveries,
                    )
                    if not await self._mark_executing(job):
                        # Reclaimed while it waited its turn: the new holder runs it.
                        self._held.pop(job.id, None)
                        self.counters.leases_lost += 1
                        return
                outcome = await self._attempts.run(job, self._waits.pop(job.id, 0))
        except asyncio.CancelledError:
            if job.id == self._probe and self._breaker is not None:
                self._probe = None
                self._breaker.release_probe()
            if job.id not in self._lost:
                self.counters.released += 1
                self._release(job)
            return
        finally:
            self._tasks.pop(job.id, None)
            self._waits.pop(job.id, None)
            thread = self._attempts.threads_running.pop(job.id, None)
            if thread is None or thread.done():
                self._free_slot()
            else:
                # A thread cannot be stopped (timed out, cancelled by a lost lease or a
                # drain): its slot comes back only when it really ends.
                thread.add_done_callback(lambda _: self._free_slot())
        if job.id in self._lost:
            return
        self._record_for_breaker(job, outcome)
        self._settle(self._entry(job, outcome))

    # -- circuit breaker ---------------------------------------------------------------

    @property
    def breaker_state(self) -> str | None:
        return self._breaker.state if self._breaker is not None else None

    def _record_for_breaker(self, job: ClaimedJob, outcome: Outcome) -> None:
        if self._breaker is None:
            return
        if job.id == self._probe:
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
                self.name,
                self._breaker.config.cooldown_s,
            )
        else:
            log.warning("%s: circuit breaker closed: the probe succeeded", self.name)
        self._breaker_report = asyncio.create_task(self._report_breaker(changed))

    async def _report_breaker(self, state: str) -> None:
        """Best effort: show this instance's breaker in `runtime stats` (Redis)."""
        try:
            await self._broker.report_breaker(self.name, state)
        except REDIS_ERRORS as exc:
            self._log_redis_error("breaker report", exc)

    async def _mark_executing(self, job: ClaimedJob) -> bool:
        """Tell Redis this suspect really runs now, so a crash is blamed on it; retried
        while Redis is away (running it unmarked could let a poison job loop forever)."""
        retry_s = 0.05
        while True:
            try:
                return await self._broker.mark_executing(self.name, job.id, job.token)
            except REDIS_ERRORS as exc:
                self._log_redis_error("mark", exc)
                await asyncio.sleep(retry_s)
                retry_s = min(retry_s * 2, 2.0)

    async def _extend_one(self, job: ClaimedJob) -> float:
        lost = await self._broker.extend(self.name, [(job.id, job.token)], lease_ms=self._lease_ms)
        if lost:
            raise LeaseLost(f"job {job.id} was reclaimed by another runtime")
        return self._settings.lease_s

    def _entry(self, job: ClaimedJob, outcome: Outcome) -> SettleEntry:
        opts = self.spec.options
        m = self._metrics
        match outcome:
            case Completed(result):
                self.counters.completed += 1
                if m is not None:
                    m.completed.inc()
                return Complete(job.id, job.token, result)
            case Failed(reason, error, delay_s):
                attempt = job.attempts + 1
                if m is not None:
                    m.failed(reason)
                if attempt >= opts.max_attempts:
                    self.counters.dead += 1
                    if m is not None:
                        m.dead(reason)
                    return SendToDlq(job.id, job.token, reason, error, is_attempt=True)
                if delay_s is None:
                    delay_s = backoff_delay_s(attempt, opts.backoff)
                self.counters.retried += 1
                if m is not None:
                    m.retried.inc()
                self._wake_at(delay_s)
                return RetryLater(job.id, job.token, round(delay_s * 1000), error, reason)
            case DeadLetter(reason, error, is_attempt):
                self.counters.dead += 1
                if m is not None:
                    if is_attempt:
                        m.failed(reason)
                    m.dead(reason)
                return SendToDlq(job.id, job.token, reason, error, is_attempt)
            case Crashed(error):
                if m is not None:
                    m.failed("worker_crashed")
                return WorkerCrashed(job.id, job.token, opts.max_recoveries, error)

    def _wake_at(self, delay_s: float) -> None:
        """Claim again when a retry is due (this worker may be asleep until idle_poll_s);
        other instances find it by their own polling or their next claim."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the loop (a unit test of _entry)
            return
        loop.call_later(delay_s + 0.001, self._wake.set)

    # -- settling ----------------------------------------------------------------------

    def _release(self, job: ClaimedJob) -> None:
        """Back to the front of its lane, no counter changed; the lease is heartbeated until
        the release is settled."""
        self._held[job.id] = job.token
        self._settle(Release(job.id, job.token))

    def _settle(self, entry: SettleEntry) -> None:
        """Queue an outcome; outcomes of the same loop turn go to Redis in one script."""
        self._pending.append(entry)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name=f"settle:{self.name}")

    async def _flush(self) -> None:
        retry_s = 0.05
        while self._pending:
            batch = self._pending[:SETTLE_BATCH]
            del self._pending[:SETTLE_BATCH]
            try:
                codes = await self._broker.settle(self.name, batch)
            except REDIS_ERRORS as exc:
                self._pending[:0] = batch  # keep order; the leases are still heartbeated
                self._log_redis_error("settle", exc)
                await asyncio.sleep(retry_s)
                retry_s = min(retry_s * 2, 2.0)
                continue
            retry_s = 0.05
            for entry, code in zip(batch, codes, strict=True):
                if self._held.get(entry.id) == entry.token:
                    del self._held[entry.id]
                if code == 0:
                    self.counters.stale_acks += 1
                    log.warning(
                        "%s: outcome %s of job %s refused: its lease was reclaimed (fenced)",
                        self.name,
                        entry.op,
                        entry.id,
                    )

    # -- leases ------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self._settings.heartbeat_s
        # Jobs may have been handed over while parked, their message lost: look for them
        # until one lease after the last park could have ended.
        window_s = self._settings.lease_s + self._park_ttl_ms / 1000
        while not self._closing:
            await asyncio.sleep(interval)
            held = list(self._held.items())
            recent = time.monotonic() - self._parked_at <= window_s
            channel = self.handoff_channel if recent and not self._stopping else ""
            if not held and not channel:
                continue
            try:
                lost, adopted = await self._broker.heartbeat(
                    self.name, held, lease_ms=self._lease_ms, channel=channel
                )
            except REDIS_ERRORS as exc:
                self._log_redis_error("heartbeat", exc)
                continue
            for job_id in lost:
                self._lose(job_id)
            for job in adopted:
                if job.id in self._held:
                    continue  # its message arrived during the call
                log.warning(
                    "%s: job %s was handed to this runtime but its message was lost; adopting it",
                    self.name,
                    job.id,
                )
                if self._metrics is not None:
                    self._metrics.handoff_adopted.inc()
                self.accept(job, job.ready_ms, adopted=True)
                self._adopted[job.id] = None
                while len(self._adopted) > 10_000:
                    del self._adopted[next(iter(self._adopted))]

    def _lose(self, job_id: str) -> None:
        """Our lease on ``job_id`` was reclaimed: stop working on it, settle nothing."""
        task = self._tasks.get(job_id)
        self._held.pop(job_id, None)
        if task is None:
            return  # already finished; its settle (if pending) will be refused or was applied
        self._lost.add(job_id)
        self.counters.leases_lost += 1
        log.warning("%s: lease of job %s lost (reclaimed); cancelling it", self.name, job_id)
        task.cancel()
        task.add_done_callback(lambda _: self._lost.discard(job_id))

    async def _reclaim_loop(self) -> None:
        interval = self._settings.reclaim_interval_s
        while not self._closing:
            # Jitter, so a fleet's reclaimers do not all fire at once.
            await asyncio.sleep(interval * (0.75 + random.random() / 2))
            try:
                requeued, dead = await self._broker.reclaim(
                    self.name, max_recoveries=self.spec.options.max_recoveries
                )
            except REDIS_ERRORS as exc:
                self._log_redis_error("reclaim", exc)
                continue
            if dead and self._metrics is not None:
                for _ in range(dead):
                    self._metrics.dead("worker_crashed")
            if requeued or dead:
                log.warning(
                    "%s: reclaimed %d expired lease(s): %d requeued, %d dead-lettered",
                    self.name,
                    requeued + dead,
                    requeued,
                    dead,
                )

    def _log_redis_error(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= 5.0:  # weather, not news: at most one line per 5 s
            self._last_error_log = now
            log.warning("%s: Redis unavailable during %s: %s", self.name, what, exc)
