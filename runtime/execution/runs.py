"""The jobs one worker runs: a task per lease, (job id, token) (held.py), from the claim (or
handoff) that started it until its attempt's outcome is handed to the settler.

Each run holds one of the worker's slots until its handler really ends (an abandoned
thread, or a coroutine that ignores its cancellation, keeps it: attempt.py). A run ends on
its attempt's outcome whatever the handler raised. The runtime cancels a run for two
reasons only, recorded here before ``task.cancel()``: a drain (the job is released to the
front of its lane) and a lost lease (nothing is settled: the job's new holder runs it).
Any other cancellation of a run is not the runtime's, and fails its attempt as a handler
error. The same job claimed again with a newer token is another run, which no late reply
about the old token can touch; the older run is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Literal

from runtime.execution.attempt import Attempts
from runtime.execution.breaker import BreakerKeeper
from runtime.execution.counters import WorkerCounters
from runtime.execution.gate import QuarantineGate
from runtime.execution.held import HeldLeases, Lease
from runtime.execution.settler import Settler
from runtime.jobs.outcome import Failed, Outcome
from runtime.jobs.records import ClaimedJob
from runtime.observe.metrics import FunctionMetrics

log = logging.getLogger("runtime.worker")  # the worker's parts log as the worker
CancelReason = Literal["drain", "lost"]


class Runs:
    def __init__(
        self,
        function: str,
        *,
        held: HeldLeases,
        gate: QuarantineGate,
        attempts: Attempts,
        breaker: BreakerKeeper,
        settler: Settler,
        counters: WorkerCounters,
        metrics: FunctionMetrics | None,
        is_traced: bool,
        slot_freed: Callable[[], None],
    ) -> None:
        self._name = function
        self._held = held  # the worker's leases, from claim until settled
        self._gate = gate
        self._attempts = attempts
        self._breaker = breaker
        self._settler = settler
        self._counters = counters
        self._metrics = metrics
        self._is_traced = is_traced
        self._slot_freed = slot_freed
        self.running = 0  # slots taken: runs, and handlers running on after theirs ended
        self._tasks: dict[Lease, asyncio.Task[None]] = {}  # each run, until it ends
        self._waits: dict[Lease, int] = {}  # ms each job waited ready (for its span)
        # Why the runtime cancelled a run (set before task.cancel(), until the run ends).
        self._cancelled: dict[Lease, CancelReason] = {}

    def start(self, job: ClaimedJob, now_ms: int) -> None:
        """Run ``job`` in a free slot (the caller checked there is one)."""
        lease = (job.id, job.token)
        if lease in self._tasks:
            return  # this very lease already runs here (never expected: a claim is new)
        self._counters.claimed += 1
        if self._metrics is not None:
            self._metrics.consumed.inc()
            self._metrics.queue_wait.observe(max(0, now_ms - job.ready_ms) / 1000)
        if self._is_traced:  # only the span uses it (runtime.queue_wait_ms)
            self._waits[lease] = max(0, now_ms - job.ready_ms)
        self.running += 1
        superseded = self._held.hold(lease)
        if superseded is not None:
            # Claimed again while this worker still held an older lease: that one expired
            # (Redis out of reach) and was reclaimed, so its run is lost.
            self.lose((job.id, superseded))
        self._tasks[lease] = asyncio.create_task(self._run(job, lease))

    def lose(self, lease: Lease) -> None:
        """``lease`` is no longer ours (reclaimed, or superseded by a newer claim of the
        same job): stop that run, settle nothing for it. A newer lease on the same job, and
        its run, are untouched."""
        self._held.drop(lease)
        task = self._tasks.get(lease)
        if task is None or self._cancelled.get(lease) == "lost":
            return  # already finished; its settle (if pending) will be refused or was applied
        self._cancelled[lease] = "lost"
        self._counters.leases_lost += 1
        log.warning("%s: lease of job %s lost (reclaimed); cancelling it", self._name, lease[0])
        task.cancel()

    async def drain(self, grace_s: float) -> None:
        """Let the runs finish within ``grace_s``; release the rest to their lanes now."""
        tasks = dict(self._tasks)
        if not tasks:
            return
        _, late = await asyncio.wait(set(tasks.values()), timeout=grace_s)
        for lease, task in tasks.items():
            if task in late:
                self._cancelled.setdefault(lease, "drain")
                task.cancel()
        if late:
            await asyncio.wait(late, timeout=5.0)

    async def _run(self, job: ClaimedJob, lease: Lease) -> None:
        outcome: Outcome | None = None
        is_cancelled = False
        try:
            outcome = await self._attempt(job, lease)
        except asyncio.CancelledError:
            is_cancelled = True
        finally:
            self._tasks.pop(lease, None)
            self._waits.pop(lease, None)
            why = self._cancelled.pop(lease, None)
            handler = self._attempts.handlers_running.pop(lease, None)
            if handler is None or handler.done():
                self._give_back_slot()
            else:
                # A thread cannot be stopped, nor a coroutine that ignores its cancellation
                # (timed out, or cancelled by a lost lease or a drain): its slot comes back
                # only when it really ends.
                handler.add_done_callback(lambda _: self._give_back_slot())
        if why == "lost" or (is_cancelled and why == "drain"):
            self._breaker.cancelled(lease)
            if why == "drain":
                self._counters.released += 1
                self._settler.release(job)
            return
        if is_cancelled:  # not the runtime's cancellation: the handler's doing
            outcome = Failed("handler_error", "CancelledError: the job's task was cancelled")
        if outcome is None:
            return  # a suspect reclaimed while it waited its turn: its new holder runs it
        self._breaker.record(lease, outcome)
        self._settler.outcome(job, outcome)

    async def _attempt(self, job: ClaimedJob, lease: Lease) -> Outcome | None:
        """The job's attempt on its turn in the quarantine; None if it may not run after all."""
        is_suspect = self._gate.is_suspect(job)
        async with self._gate.turn(is_suspect):
            if is_suspect and not await self._gate.admit_suspect(job):
                self._held.drop(lease)
                self._counters.leases_lost += 1
                return None
            return await self._attempts.run(job, self._waits.pop(lease, 0))

    def _give_back_slot(self) -> None:
        self.running -= 1
        self._slot_freed()
