"""The jobs one worker runs: a run per lease, (job id, token) (held.py), from the claim (or
handoff) that started it until its attempt's outcome is handed to the settler.

A run is one task: it waits for its job's turn in the quarantine (gate.py), then runs the
attempt (attempt.py), an ``async def`` handler inline in this very task. It holds one of
the worker's slots until its handler really ends: a thread past its timeout keeps it, and
so does a coroutine that ignores its cancellation.

The runtime stops a run for four reasons only, recorded on the run before
``task.cancel()``: the attempt's timeout (it fails as ``timeout``), a drain (the job is
released to the front of its lane), a lost lease (nothing is settled: the job's new
holder runs it) and a cancel request (the heartbeat found one in the job's record: the
handler's ``ctx.cancelled`` is set too, and the run settles a release, which settle.lua
turns into ``cancelled`` because the record asks for it). That record decides how the run
ends, whatever the handler made of its cancellation (raised it, swallowed it and
returned, raised something else); any other cancellation of a run is not the runtime's,
and fails its attempt as a handler error.
A handler still running ``STOP_GRACE_S`` after its run was stopped is abandoned: the run
ends on the runtime's terms from outside its task (settled as timed out, released, or
given up), gives its quarantine turn back, and whatever its task does later is ignored;
its slot comes back only when it really ends. The same job claimed again with a newer
token is another run, which no late reply about the old token can touch; the older run
is lost.
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
StopReason = Literal["timeout", "drain", "lost", "cancel"]
STOP_GRACE_S = 1.0  # a stopped run's handler's time to end before it is abandoned


class Run:
    """One job's run: its task and the runtime's record of it."""

    __slots__ = ("grace", "is_over", "job", "lease", "task", "turn", "wait_ms", "why")
    task: asyncio.Task[None]

    def __init__(self, job: ClaimedJob, lease: Lease, wait_ms: int) -> None:
        self.job = job
        self.lease = lease
        self.wait_ms = wait_ms  # how long the job waited ready (for its span)
        self.why: StopReason | None = None  # why the runtime stopped it, before cancel()
        self.turn: bool | None = None  # the quarantine turn it holds: is_suspect, or None
        self.grace: asyncio.TimerHandle | None = None  # abandons it if it runs on, stopped
        self.is_over = False  # its end is handled: outcome settled, released or given up


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
        self._runs: dict[Lease, Run] = {}  # each run, until its task ends
        self._over: asyncio.Event | None = None  # set when a run is over, while drain waits

    def start(self, job: ClaimedJob, now_ms: int) -> None:
        """Run ``job`` in a free slot (the caller checked there is one)."""
        lease = (job.id, job.token)
        if lease in self._runs:
            return  # this very lease already runs here (never expected: a claim is new)
        self._counters.claimed += 1
        waited_ms = max(0, now_ms - job.ready_ms)
        if self._metrics is not None:  # jobs_consumed: from counters.claimed (Worker)
            self._metrics.queue_wait.observe(waited_ms / 1000)
        self.running += 1
        superseded = self._held.hold(lease)
        if superseded is not None:
            # Claimed again while this worker still held an older lease: that one expired
            # (Redis out of reach) and was reclaimed, so its run is lost.
            self.lose((job.id, superseded))
        run = Run(job, lease, waited_ms if self._is_traced else 0)
        self._runs[lease] = run
        run.task = asyncio.create_task(self._run(run))

    def time_out(self, lease: Lease) -> None:
        """The attempt of ``lease``, an ``async def`` handler, is past its timeout."""
        run = self._runs.get(lease)
        if run is not None and run.why is None:
            self._stop(run, "timeout")

    def cancel(self, lease: Lease) -> None:
        """The job of ``lease`` is to be cancelled (its record says so): stop its run."""
        run = self._runs.get(lease)
        if run is None or run.is_over or run.why is not None:
            return  # ended, or already stopping: settle.lua ends it cancelled anyway
        log.info("%s: job %s cancelled on request; stopping its run", self._name, lease[0])
        self._attempts.flag_cancelled(lease)
        self._stop(run, "cancel")

    def why_stopped(self, lease: Lease) -> StopReason | None:
        """Why the runtime stopped the run of ``lease``, if it did."""
        run = self._runs.get(lease)
        return run.why if run is not None else None

    def lose(self, lease: Lease) -> None:
        """``lease`` is no longer ours (reclaimed, or superseded by a newer claim of the
        same job): stop that run, settle nothing for it. A newer lease on the same job, and
        its run, are untouched."""
        self._held.drop(lease)
        run = self._runs.get(lease)
        if run is None or run.is_over or run.why == "lost":
            return  # already ended; its settle (if pending) will be refused or was applied
        self._counters.leases_lost += 1
        log.warning("%s: lease of job %s lost (reclaimed); cancelling it", self._name, lease[0])
        if run.why is None:
            self._stop(run, "lost")
        else:  # already stopping (timed out, drained): now nothing is settled for it
            run.why = "lost"

    async def drain(self, grace_s: float) -> None:
        """Let the runs finish within ``grace_s``; release the rest to their lanes now."""
        runs = [run for run in self._runs.values() if not run.is_over]
        if not await self._until_over(runs, grace_s):
            for run in runs:
                if not run.is_over and run.why is None:
                    self._stop(run, "drain")
            # Each is over by the end of its stop grace at the latest (abandoned).
            await self._until_over(runs, STOP_GRACE_S + 1.0)

    def close(self) -> None:
        """At shutdown: cancel the handlers of abandoned runs once more."""
        for run in self._runs.values():
            if run.is_over:
                run.task.cancel()

    def _stop(self, run: Run, why: StopReason) -> None:
        run.why = why
        run.task.cancel()
        run.grace = asyncio.get_running_loop().call_later(STOP_GRACE_S, self._abandon, run)

    def _abandon(self, run: Run) -> None:
        """``STOP_GRACE_S`` after it was stopped, the run still runs: its handler ignores
        its cancellation. End the run on the runtime's terms now; the task runs on,
        holding its slot only."""
        run.grace = None
        if run.is_over or run.task.done():
            return
        log.warning(
            "%s: the handler of job %s ignored its cancellation; abandoning it (its slot "
            "stays taken until it ends)",
            self._name,
            run.job.id,
        )
        self._leave_turn(run)
        self._finish(run, None, is_cancelled=True)

    async def _until_over(self, runs: list[Run], timeout_s: float) -> bool:
        """Wait until each of ``runs`` is over, for ``timeout_s`` at most; False if not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while any(not run.is_over for run in runs):
            self._over = over = asyncio.Event()
            try:
                async with asyncio.timeout_at(deadline):
                    await over.wait()
            except TimeoutError:
                return False
            finally:
                self._over = None
        return True

    async def _run(self, run: Run) -> None:
        outcome: Outcome | None = None
        is_cancelled = False
        try:
            outcome = await self._attempt(run)
        except asyncio.CancelledError:
            is_cancelled = True
        finally:
            self._ended(run)
            if not run.is_over:  # else abandoned: what the handler did at last is ignored
                self._finish(run, outcome, is_cancelled)

    async def _attempt(self, run: Run) -> Outcome | None:
        """The job's attempt on its turn in the quarantine; None if it may not run after all."""
        job = run.job
        is_suspect = self._gate.is_suspect(job)
        await self._gate.enter(is_suspect)
        run.turn = is_suspect
        try:
            if is_suspect and not await self._gate.admit_suspect(job):
                self._held.drop(run.lease)
                self._counters.leases_lost += 1
                return None
            return await self._attempts.run(job, run.wait_ms)
        finally:
            self._leave_turn(run)

    def _leave_turn(self, run: Run) -> None:
        if run.turn is not None:
            self._gate.leave(run.turn)
            run.turn = None

    def _finish(self, run: Run, outcome: Outcome | None, is_cancelled: bool) -> None:
        """The run is over: hand its outcome to the settler, on the runtime's terms."""
        run.is_over = True
        if self._over is not None:
            self._over.set()
        why = run.why
        if why == "lost" or why == "drain" or why == "cancel":
            self._breaker.cancelled(run.lease)
            if why == "drain":
                self._counters.released += 1
            if why != "lost":
                # A release: settle.lua ends a job whose cancel was requested 'cancelled',
                # whatever the entry; were the request somehow gone, it goes back to its lane.
                self._settler.release(run.job)
            return
        if why == "timeout":
            outcome = Failed("timeout", "attempt timed out")
        elif is_cancelled:  # not the runtime's cancellation: the handler's doing
            outcome = Failed("handler_error", "CancelledError: the job's task was cancelled")
        if outcome is None:
            return  # a suspect reclaimed while it waited its turn: its new holder runs it
        self._breaker.record(run.lease, outcome)
        self._settler.outcome(run.job, outcome)

    def _ended(self, run: Run) -> None:
        """The run's task ends: its slot comes back now, or when its thread really ends."""
        del self._runs[run.lease]
        if run.grace is not None:
            run.grace.cancel()
            run.grace = None
        thread = self._attempts.threads_running.pop(run.lease, None)
        if thread is None or thread.done():
            self._give_back_slot()
        else:
            # A thread cannot be stopped: its slot comes back only when it really ends.
            thread.add_done_callback(lambda _: self._give_back_slot())

    def _give_back_slot(self) -> None:
        self.running -= 1
        self._slot_freed()
