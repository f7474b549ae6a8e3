"""Leases: the heartbeat that renews the leases one worker holds (and adopts the jobs handed
to it whose message was lost), and the reclaimer that requeues every instance's expired
leases of its function.

A lease the heartbeat finds gone was reclaimed by another runtime: the worker stops working
on that job and settles nothing for it. A held job whose cancel was requested (its record's
``cxl``, see ``lua/cancel.lua``) is reported by the same reply: the worker stops its run,
and the job ends ``cancelled`` when that run settles. A job whose lease expired is requeued with one
more recovery, or dead-lettered as ``worker_crashed`` past ``max_recoveries``.

Leases are (job id, token) pairs (held.py): a heartbeat's reply names the leases it sent,
so a reply that arrives after the job was claimed again with a newer token touches only
the old run. Both loops outlive any Redis error (unreachable, out of memory, refused):
each is noted in the outage log and the loop tries again at its next turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from runtime.config.schema import WorkerSettings
from runtime.errors import LeaseLost
from runtime.execution.counters import WorkerCounters
from runtime.execution.handoffs import Handoffs
from runtime.execution.held import HeldLeases, Lease
from runtime.execution.outages import OutageLog
from runtime.jobs.records import ClaimedJob
from runtime.observe.metrics import FunctionMetrics
from runtime.observe.supervisor import raise_if_cancelled
from runtime.queue.broker import RedisBroker

log = logging.getLogger("runtime.worker")  # the worker's parts log as the worker
NUDGE_GAP_S = 0.05  # a nudged heartbeat waits this long, so a burst of hints costs one beat


class Heartbeat:
    def __init__(
        self,
        function: str,
        broker: RedisBroker,
        settings: WorkerSettings,
        *,
        held: HeldLeases,
        lose: Callable[[Lease], None],
        cancel: Callable[[Lease], None],
        handoffs: Handoffs,
        stop: asyncio.Event,
        counters: WorkerCounters,
        metrics: FunctionMetrics | None,
        outages: OutageLog,
    ) -> None:
        self._name = function
        self._broker = broker
        self._lease_s = settings.lease_s
        self._lease_ms = settings.lease_ms
        self._interval_s = settings.heartbeat_s
        self._held = held  # the worker's leases, from claim until settled
        self._lose = lose  # stops the run of a lease no longer ours (runs.py)
        self._cancel = cancel  # stops the run of a job whose cancel was requested
        self._handoffs = handoffs
        self._stop = stop  # set by a drain: adopt nothing more
        self._counters = counters
        self._metrics = metrics
        self._outages = outages
        self._nudged = asyncio.Event()  # beat now: a cancel was requested (dispatcher)

    def nudge(self) -> None:
        """Beat now rather than at the next interval (a hint: at most every NUDGE_GAP_S)."""
        self._nudged.set()

    async def run(self) -> None:
        while True:  # ends when its supervisor cancels it (worker.drain)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._nudged.wait()
                await asyncio.sleep(NUDGE_GAP_S)  # nudged: a burst of hints makes one beat
            self._nudged.clear()
            held = self._held.pairs()
            channel = "" if self._stop.is_set() else self._handoffs.adoption_channel()
            if not held and not channel:
                continue
            try:
                lost, adopted, cancelling = await self._broker.heartbeat(
                    self._name, held, lease_ms=self._lease_ms, channel=channel
                )
            except Exception as exc:  # any Redis error, or a reply that does not parse
                raise_if_cancelled()  # a stop that redis-py turned into a timeout
                self._outages.note("heartbeat", exc)
                continue
            sent = dict(held)  # one lease per job: the reply's ids name the leases sent
            for job_id in lost:
                token = sent.get(job_id)
                if token is not None:
                    self._lose((job_id, token))
            for job_id in cancelling:
                token = sent.get(job_id)
                if token is not None:
                    self._cancel((job_id, token))
            for job in adopted:
                self._adopt(job)

    def _adopt(self, job: ClaimedJob) -> None:
        if self._held.token_of(job.id) is not None:
            return  # its message arrived during the call (or it was claimed since)
        if self._handoffs.has_started((job.id, job.token)):
            return  # its message arrived during the call, and it already ran and settled
        log.warning(
            "%s: job %s was handed to this runtime but its message was lost; adopting it",
            self._name,
            job.id,
        )
        if self._metrics is not None:
            self._metrics.handoff_adopted.inc()
        self._handoffs.adopt(job)

    async def extend_one(self, job: ClaimedJob) -> float:
        """Renew one job's lease now; returns the lease in seconds (raises LeaseLost)."""
        lost = await self._broker.extend(self._name, [(job.id, job.token)], lease_ms=self._lease_ms)
        if lost:
            raise LeaseLost(f"job {job.id} was reclaimed by another runtime")
        return self._lease_s


class Reclaimer:
    def __init__(
        self,
        function: str,
        broker: RedisBroker,
        *,
        interval_s: float,
        max_recoveries: int,
        metrics: FunctionMetrics | None,
        outages: OutageLog,
    ) -> None:
        self._name = function
        self._broker = broker
        self._interval_s = interval_s
        self._max_recoveries = max_recoveries
        self._metrics = metrics
        self._outages = outages

    async def run(self) -> None:
        while True:  # ends when its supervisor cancels it (worker.drain)
            # Jitter, so a fleet's reclaimers do not all fire at once.
            await asyncio.sleep(self._interval_s * (0.75 + random.random() / 2))  # noqa: S311 — jitter, not a secret
            try:
                requeued, dead = await self._broker.reclaim(
                    self._name, max_recoveries=self._max_recoveries
                )
            except Exception as exc:  # any Redis error, or a reply that does not parse
                raise_if_cancelled()  # a stop that redis-py turned into a timeout
                self._outages.note("reclaim", exc)
                continue
            if dead and self._metrics is not None:
                for _ in range(dead):
                    self._metrics.dead("worker_crashed")
            if requeued or dead:
                log.warning(
                    "%s: reclaimed %d expired lease(s): %d requeued, %d dead-lettered",
                    self._name,
                    requeued + dead,
                    requeued,
                    dead,
                )
