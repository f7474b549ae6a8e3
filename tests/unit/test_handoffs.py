"""A handed-over job runs once on this worker, whichever of its message and the heartbeat's
adoption comes first, even when the other comes after the run already ended.

Found by chaos scenario 10: a heartbeat call that waited for a reconnect returned a job as
"handed, message lost" after its message had arrived, the job had run and been settled
(its lease no longer held), and the worker ran it a second time."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from runtime.config.schema import WorkerSettings
from runtime.execution.breaker import BreakerKeeper
from runtime.execution.counters import WorkerCounters
from runtime.execution.handoffs import Handoffs
from runtime.execution.held import HeldLeases
from runtime.execution.outages import OutageLog
from runtime.jobs.records import ClaimedJob


def _handoffs(started: list[str], held: HeldLeases) -> Handoffs:
    breaker = BreakerKeeper("f", None, cast(Any, None), metrics=None, outages=OutageLog("f"))

    def start(job: ClaimedJob, now_ms: int) -> None:
        started.append(job.id)
        held.hold((job.id, job.token))

    handoffs = Handoffs(
        WorkerSettings(),
        held=held,
        stop=asyncio.Event(),
        free_slots=lambda: 4,
        breaker=breaker,
        counters=WorkerCounters(),
        metrics=None,
        start=start,
        release=lambda job: None,
    )
    return handoffs


def _job() -> ClaimedJob:
    return ClaimedJob("f.a", "1", b"", 0, 0, 0)


async def test_an_adoption_after_the_run_ended_does_not_run_it_again() -> None:
    started: list[str] = []
    held = HeldLeases()
    handoffs = _handoffs(started, held)
    job = _job()
    handoffs.accept(job, handoffs.clock.now_ms())  # its message
    held.drop((job.id, job.token))  # ran and settled
    handoffs.adopt(job)  # a late heartbeat reply that saw it handed and not held
    assert started == ["f.a"]


async def test_a_message_after_the_adopted_run_ended_does_not_run_it_again() -> None:
    started: list[str] = []
    held = HeldLeases()
    handoffs = _handoffs(started, held)
    job = _job()
    handoffs.adopt(job)
    held.drop((job.id, job.token))
    handoffs.accept(job, handoffs.clock.now_ms())  # the message came after all
    assert started == ["f.a"]
