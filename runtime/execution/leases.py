"""Leases: the heartbeat that renews the leases one worker holds (and adopts the jobs handed
to it whose message was lost), and the reclaimer that requeues every instance's expired
leases of its function.

A lease the heartbeat finds gone was reclaimed by another runtime: the worker stops working
on that job and settles nothing for it. A job whose lease expired is requeued with one
more recovery, or dead-lettered as ``worker_crashed`` past ``max_recoveries``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping

from runtime.config.schema import WorkerSettings
from runtime.errors import BrokerUnavailable, LeaseLost
from runtime.execution.counters import WorkerCounters
from runtime.execution.handoffs import Handoffs
from runtime.execution.outages import OutageLog
from runtime.jobs.records import ClaimedJob
from runtime.observe.metrics import FunctionMetrics
from runtime.queue.broker import RedisBroker

log = logging.getLogger("runtime.worker")  # the worker's parts log as the worker


class Heartbeat:
    def __init__(
        self,
        function: str,
        broker: RedisBroker,
        settings: WorkerSettings,
        *,
        held: dict[str, str],
        tasks: Mapping[str, asyncio.Task[None]],
        lost: set[str],
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
        # The worker's: job id -> token from claim until settled, job id -> its running
        # task, and the ids of running jobs whose lease was lost.
        self._held = held
        self._tasks = tasks
        self._lost = lost
        self._handoffs = handoffs
        self._stop = stop  # set by a drain: adopt nothing more
        self._counters = counters
        self._metrics = metrics
        self._outages = outages
        self._closing = False

    def close(self) -> None:
        """End the loop at its next turn (a cancellation may be swallowed by redis-py)."""
        self._closing = True

    async def run(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._interval_s)
            held = list(self._held.items())
            channel = "" if self._stop.is_set() else self._handoffs.adoption_channel()
            if not held and not channel:
                continue
            try:
                lost, adopted = await self._broker.heartbeat(
                    self._name, held, lease_ms=self._lease_ms, channel=channel
                )
            except BrokerUnavailable as exc:
                self._outages.note("heartbeat", exc)
                continue
            for job_id in lost:
                self._lose(job_id)
            for job in adopted:
                self._adopt(job)

    def _adopt(self, job: ClaimedJob) -> None:
        if job.id in self._held:
            return  # its message arrived during the call
        log.warning(
            "%s: job %s was handed to this runtime but its message was lost; adopting it",
            self._name,
            job.id,
        )
        if self._metrics is not None:
            self._metrics.handoff_adopted.inc()
        self._handoffs.adopt(job)

    def _lose(self, job_id: str) -> None:
        """Our lease on ``job_id`` was reclaimed: stop working on it, settle nothing."""
        task = self._tasks.get(job_id)
        self._held.pop(job_id, None)
        if task is None:
            return  # already finished; its settle (if pending) will be refused or was applied
        self._lost.add(job_id)
        self._counters.leases_lost += 1
        log.warning("%s: lease of job %s lost (reclaimed); cancelling it", self._name, job_id)
        task.cancel()
        task.add_done_callback(lambda _: self._lost.discard(job_id))

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
        self._closing = False

    def close(self) -> None:
        """End the loop at its next turn (a cancellation may be swallowed by redis-py)."""
        self._closing = True

    async def run(self) -> None:
        while not self._closing:
            # Jitter, so a fleet's reclaimers do not all fire at once.
            await asyncio.sleep(self._interval_s * (0.75 + random.random() / 2))
            try:
                requeued, dead = await self._broker.reclaim(
                    self._name, max_recoveries=self._max_recoveries
                )
            except BrokerUnavailable as exc:
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
