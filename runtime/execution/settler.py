"""Settling one worker's jobs: an attempt's outcome becomes a settle entry (counted and
measured here), and the entries queued in one loop turn go to Redis in one settle script,
retried in order while Redis is away.

A job stays held (its lease heartbeated) until its entry is acknowledged; an entry that
fencing refuses (the lease had been reclaimed) changes nothing in Redis and is counted as
a stale ack. An acknowledgement drops only the lease its entry named, (job id, token): a
newer lease on the same job is another run's. Any Redis error (unreachable, out of memory,
refused) keeps the batch pending, in order, retried with backoff.

Every failed attempt is logged here, once, at WARNING: function, job id, attempt, what it
raised and, with ``worker.log_tracebacks``, its traceback (formatted by ``jobs.outcome``
only for a failure: a completed attempt costs no formatting and no log line).
"""

from __future__ import annotations

import asyncio
import logging

from runtime.execution.counters import WorkerCounters
from runtime.execution.held import HeldLeases
from runtime.execution.outages import OutageLog
from runtime.function import FunctionOptions
from runtime.jobs.outcome import Completed, Crashed, DeadLetter, Failed, Outcome, backoff_delay_s
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
from runtime.queue.broker import RedisBroker

log = logging.getLogger("runtime.worker")  # the worker's parts log as the worker
SETTLE_BATCH = 500


class Settler:
    def __init__(
        self,
        function: str,
        options: FunctionOptions,
        broker: RedisBroker,
        *,
        held: HeldLeases,
        counters: WorkerCounters,
        metrics: FunctionMetrics | None,
        wake: asyncio.Event,
        outages: OutageLog,
        log_tracebacks: bool = True,
    ) -> None:
        self._name = function
        self._options = options
        self._broker = broker
        self._held = held  # the worker's leases, from claim until settled
        self._counters = counters
        self._metrics = metrics
        self._wake = wake  # the claim loop's
        self._outages = outages
        self._log_tracebacks = log_tracebacks
        self._pending: list[SettleEntry] = []
        self._flusher: asyncio.Task[None] | None = None

    def outcome(self, job: ClaimedJob, outcome: Outcome) -> None:
        """Settle what an attempt of ``job`` ended with."""
        self.settle(self.entry(job, outcome))

    def entry(self, job: ClaimedJob, outcome: Outcome) -> SettleEntry:
        """The settle entry of an outcome, given the job's attempts (counted and measured)."""
        opts = self._options
        m = self._metrics
        match outcome:
            case Completed(result):
                self._counters.completed += 1  # jobs_completed follows it (Worker)
                return Complete(job.id, job.token, result)
            case Failed(reason, error, delay_s, tb):
                attempt = job.attempts + 1
                if m is not None:
                    m.failed(reason)
                if attempt >= opts.max_attempts:
                    self._counters.dead += 1
                    if m is not None:
                        m.dead(reason)
                    self._log_failure(job, reason, error, tb, "dead-lettered: no attempts left")
                    return SendToDlq(job.id, job.token, reason, error, True, tb)
                if delay_s is None:
                    delay_s = backoff_delay_s(attempt, opts.backoff)
                self._counters.retried += 1
                if m is not None:
                    m.retried.inc()
                self._wake_at(delay_s)
                self._log_failure(job, reason, error, tb, f"retry in {delay_s:.3g} s")
                return RetryLater(job.id, job.token, round(delay_s * 1000), error, reason, tb)
            case DeadLetter(reason, error, is_attempt, tb):
                self._counters.dead += 1
                if m is not None:
                    if is_attempt:
                        m.failed(reason)
                    m.dead(reason)
                self._log_failure(job, reason, error, tb, "dead-lettered")
                return SendToDlq(job.id, job.token, reason, error, is_attempt, tb)
            case Crashed(error):
                if m is not None:
                    m.failed("worker_crashed")
                self._log_failure(job, "worker_crashed", error, "", "requeued as a recovery")
                return WorkerCrashed(job.id, job.token, opts.max_recoveries, error)

    def _log_failure(self, job: ClaimedJob, reason: str, error: str, tb: str, then: str) -> None:
        """One WARNING line (plus the traceback, if any and asked for) per failed attempt."""
        if not log.isEnabledFor(logging.WARNING):
            return
        extra: dict[str, object] = {"function": self._name, "job_id": job.id}
        extra["attempt"] = job.attempts + 1
        if tb and self._log_tracebacks:
            extra["traceback"] = tb.rstrip()  # text: lines after the entry; JSON: a field
        log.warning(
            "%s: job %s attempt %d failed (%s): %s; %s",
            self._name,
            job.id,
            job.attempts + 1,
            reason,
            error,
            then,
            extra=extra,
        )

    def _wake_at(self, delay_s: float) -> None:
        """Claim again when a retry is due (this worker may be asleep until idle_poll_s);
        other instances find it by their own polling or their next claim."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the loop (a unit test of entry)
            return
        loop.call_later(delay_s + 0.001, self._wake.set)

    def release(self, job: ClaimedJob) -> None:
        """Back to the front of its lane, no counter changed; the lease is heartbeated until
        the release is settled (unless a newer lease on the job is held: this one is gone,
        and its release will be refused)."""
        if self._held.token_of(job.id) in (None, job.token):
            self._held.hold((job.id, job.token))
        self.settle(Release(job.id, job.token))

    def settle(self, entry: SettleEntry) -> None:
        """Queue an outcome; outcomes of the same loop turn go to Redis in one script."""
        self._pending.append(entry)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name=f"settle:{self._name}")

    async def flushed(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) until every queued entry has been sent."""
        if self._flusher is not None:
            await asyncio.wait({self._flusher}, timeout=timeout_s)

    async def _flush(self) -> None:
        retry_s = 0.05
        while self._pending:
            batch = self._pending[:SETTLE_BATCH]
            del self._pending[:SETTLE_BATCH]
            try:
                codes = await self._broker.settle(self._name, batch)
                if len(codes) != len(batch):  # settling again is safe: it knows its effect
                    raise ValueError(f"{len(codes)} answers to a settle of {len(batch)}")
            except Exception as exc:  # any Redis error, or a reply that does not parse
                self._pending[:0] = batch  # keep order; the leases are still heartbeated
                self._outages.note("settle", exc)
                await asyncio.sleep(retry_s)  # a cluster's failover ends unannounced: soon
                retry_s = min(retry_s * 2, 0.2 if self._broker.redis.is_cluster else 2.0)
                continue
            retry_s = 0.05
            for entry, code in zip(batch, codes, strict=True):
                self._held.drop((entry.id, entry.token))
                if code == 0:
                    self._counters.stale_acks += 1
                    log.warning(
                        "%s: outcome %s of job %s refused: its lease was reclaimed (fenced)",
                        self._name,
                        entry.op,
                        entry.id,
                    )
