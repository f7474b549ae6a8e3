"""One function's worker: claims its jobs, runs them within its limits, settles outcomes.

``FunctionWorker`` owns the worker's slots (the jobs it runs, at most ``concurrency``, and
the leases it holds) and wires its parts, for one function in this process:

- ``claimer.Claimer``: the claim loop (batched claims, no busy polling; an idle claim
  parks the worker for handoffs);
- ``handoffs.Handoffs``: the jobs enqueue hands to the parked worker, started or released
  (``accept``), and the Redis-clock estimate that judges a late one;
- ``runs.Runs``: a task per job run, keyed by its lease; each waits its turn in the
  process's quarantine (``gate.QuarantineGate``), then runs one attempt
  (``attempt.Attempts``; an ``async def`` handler inline in the run's task), and the
  runtime's record of why it stopped one (timeout, drain, lost lease);
- ``breaker.BreakerKeeper``: the circuit breaker's view of claims and outcomes;
- ``settler.Settler``: each outcome as a settle entry, coalesced into one script call;
- ``leases.Heartbeat`` and ``leases.Reclaimer``: the heartbeat that renews the leases
  held (and adopts lost handoffs), the reclaimer of expired leases.

A job's slot is held from claim until its handler returns (or, for an abandoned handler,
until it really ends); its lease is renewed until its outcome is settled in Redis.
Everything about one run is keyed by its lease, (job id, token) (held.py): the same job
claimed again with a newer token is another run, which no late reply about the old token
can touch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from runtime.config.schema import WorkerSettings
from runtime.execution.attempt import Attempts
from runtime.execution.breaker import BreakerKeeper
from runtime.execution.claimer import Claimer, ClaimEvents
from runtime.execution.counters import WorkerCounters
from runtime.execution.gate import QuarantineGate
from runtime.execution.handoffs import Handoffs
from runtime.execution.held import HeldLeases
from runtime.execution.leases import Heartbeat, Reclaimer
from runtime.execution.outages import OutageLog
from runtime.execution.quarantine import Quarantine
from runtime.execution.runs import Runs
from runtime.execution.settler import Settler
from runtime.function import FunctionSpec
from runtime.jobs.records import ClaimedJob
from runtime.observe.metrics import FunctionMetrics, Tallies
from runtime.observe.supervisor import Supervisor
from runtime.observe.tracing import Tracing
from runtime.queue.broker import RedisBroker

log = logging.getLogger("runtime.worker")


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
        self.name = spec.name
        self.counters = WorkerCounters()
        opts = spec.options
        self._settings = settings
        self._metrics = metrics
        self._tracing = tracing or Tracing()
        self._held = HeldLeases()  # from claim until settled
        self._events = ClaimEvents()
        # The claim, heartbeat and reclaim loops, restarted if they fail (set by start()).
        self._supervisor: Supervisor | None = None
        outages = OutageLog(self.name)
        self._breaker = BreakerKeeper(
            self.name, opts.breaker, broker, metrics=metrics, outages=outages
        )
        self._gate = QuarantineGate(
            self.name,
            quarantine or Quarantine(),
            broker,
            max_recoveries=opts.max_recoveries,
            outages=outages,
        )
        self._settler = Settler(
            self.name,
            opts,
            broker,
            held=self._held,
            counters=self.counters,
            metrics=metrics,
            wake=self._events.wake,
            outages=outages,
            log_tracebacks=settings.log_tracebacks,
        )
        self._attempts = Attempts(
            spec,
            max_envelope_bytes=settings.max_envelope_bytes,
            extend_lease=lambda job: self._heartbeat.extend_one(job),
            time_out=lambda lease: self._runs.time_out(lease),
            why_stopped=lambda lease: self._runs.why_stopped(lease),
            write_progress=lambda job, value: broker.report_progress(
                self.name, job.id, job.token, value
            ),
            params=params,
            metrics=metrics,
            tracing=self._tracing,
        )
        if metrics is not None:
            metrics.follow(
                Tallies(
                    consumed=lambda: self.counters.claimed,
                    completed=lambda: self.counters.completed,
                    active=lambda: self._attempts.active,
                )
            )
        self._runs = Runs(
            self.name,
            held=self._held,
            gate=self._gate,
            attempts=self._attempts,
            breaker=self._breaker,
            settler=self._settler,
            counters=self.counters,
            metrics=metrics,
            is_traced=self._tracing.enabled,
            slot_freed=self._slot_freed,
        )
        self._handoffs = Handoffs(
            settings,
            held=self._held,
            stop=self._events.stop,
            free_slots=self._free_slots,
            breaker=self._breaker,
            counters=self.counters,
            metrics=metrics,
            start=self._runs.start,
            release=self._settler.release,
        )
        self._claimer = Claimer(
            self.name,
            opts,
            broker,
            settings,
            breaker=self._breaker,
            handoffs=self._handoffs,
            counters=self.counters,
            metrics=metrics,
            events=self._events,
            free_slots=self._free_slots,
            start=self._runs.start,
            release=self._settler.release,
            outages=outages,
        )
        self._heartbeat = Heartbeat(
            self.name,
            broker,
            settings,
            held=self._held,
            lose=self._runs.lose,
            cancel=self._runs.cancel,
            handoffs=self._handoffs,
            stop=self._events.stop,
            counters=self.counters,
            metrics=metrics,
            outages=outages,
        )
        self._reclaimer = Reclaimer(
            self.name,
            broker,
            interval_s=settings.reclaim_interval_s,
            max_recoveries=opts.max_recoveries,
            metrics=metrics,
            outages=outages,
        )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._supervisor = supervisor = Supervisor(f"worker {self.name}")
        supervisor.spawn(f"claim:{self.name}", self._claimer.run)
        supervisor.spawn(f"heartbeat:{self.name}", self._heartbeat.run)
        supervisor.spawn(f"reclaim:{self.name}", self._reclaimer.run)

    @property
    def is_alive(self) -> bool:
        """Started, its three loops running, none of them down (restarting)."""
        sup = self._supervisor
        loops = (f"claim:{self.name}", f"heartbeat:{self.name}", f"reclaim:{self.name}")
        return sup is not None and all(sup.is_running(name) for name in loops)

    @property
    def down(self) -> dict[str, str]:
        """This worker's loops that are down now: task name -> error."""
        return self._supervisor.down if self._supervisor is not None else {}

    @property
    def running(self) -> int:
        return self._runs.running

    @property
    def breaker_state(self) -> str | None:
        return self._breaker.state

    def wake(self) -> None:
        self._events.wake.set()

    def beat_now(self) -> None:
        """Heartbeat now: a cancel was requested for a running job of this function."""
        self._heartbeat.nudge()

    async def drain(self, grace_s: float) -> None:
        """Stop claiming, let running jobs finish within ``grace_s``, release the rest now."""
        self._events.stop.set()
        self._events.wake.set()
        self._events.slot_freed.set()
        sup = self._supervisor
        if sup is not None:  # the claim loop ends at stop; a claim on the wire completes
            await sup.join(f"claim:{self.name}", timeout_s=self._settings.lease_s)
        await self._runs.drain(grace_s)
        self._runs.close()  # abandoned handlers: cancelled once more, left to end
        await self._settler.flushed(3 * self._settings.lease_s)
        # The heartbeat and reclaimer end here: cancelled, again every 0.1 s if a Redis call
        # swallowed it (seen with redis-py under load), and left behind past the deadline.
        if sup is not None:
            await sup.stop(timeout_s=max(2.0, self._settings.heartbeat_s))
        await self._attempts.close()
        if self._held:
            log.warning(
                "%s: %d job(s) not settled at shutdown; their leases expire and they run again",
                self.name,
                len(self._held),
            )

    # -- handoffs ----------------------------------------------------------------------

    @property
    def handoff_channel(self) -> str:
        """This worker's handoff channel, set by the dispatcher before ``start``."""
        return self._handoffs.channel

    @handoff_channel.setter
    def handoff_channel(self, channel: str) -> None:
        self._handoffs.channel = channel

    @property
    def park_channel(self) -> str:
        """The handoff channel while parking is allowed, "" otherwise."""
        return self._handoffs.park_channel

    def allow_parking(self, allowed: bool) -> None:
        """Whether this worker's idle claims park it on its handoff channel (the dispatcher
        allows it while its subscription is up, and un-parks it in Redis when it stops)."""
        self._handoffs.allow_parking(allowed)

    def accept(self, job: ClaimedJob, now_ms: int, *, adopted: bool = False) -> None:
        """Start a job enqueue leased to this parked worker at Redis time ``now_ms``; release
        it if it cannot run here now (no free slot, stopping, breaker not closed) or if its
        message came so late (a healed partition) that its lease may be gone before the next
        heartbeat: back to the front of its lane (fenced, so harmless if already reclaimed).
        """
        self._handoffs.accept(job, now_ms, adopted=adopted)

    # -- slots -------------------------------------------------------------------------

    def _free_slots(self) -> int:
        return self.spec.options.concurrency - self._runs.running

    def _slot_freed(self) -> None:
        self._events.slot_freed.set()
        if self._claimer.is_fleet_limited:
            self._events.wake.set()
