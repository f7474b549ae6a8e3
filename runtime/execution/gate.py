"""The quarantine gate of one worker's jobs: each job runs only on its turn in the
process's ``Quarantine`` (quarantine.py), a suspect alone and only once Redis knows it is
executing (so a crash is blamed on it, not on the bystanders it waited behind)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from runtime.errors import BrokerError
from runtime.execution.outages import OutageLog
from runtime.execution.quarantine import Quarantine
from runtime.jobs.records import ClaimedJob
from runtime.jobs.suspects import is_suspect
from runtime.queue.broker import RedisBroker

log = logging.getLogger("runtime.worker")  # the worker's parts log as the worker


class QuarantineGate:
    def __init__(
        self,
        function: str,
        quarantine: Quarantine,
        broker: RedisBroker,
        *,
        max_recoveries: int,
        outages: OutageLog,
    ) -> None:
        self._name = function
        self._quarantine = quarantine
        self._broker = broker
        self._max_recoveries = max_recoveries
        self._outages = outages

    def is_suspect(self, job: ClaimedJob) -> bool:
        return is_suspect(job.recoveries, self._max_recoveries)

    def enter(self, is_suspect: bool) -> Awaitable[None]:
        """Wait for the job's turn in the quarantine: alone for a suspect, shared otherwise.
        Given back by ``leave``, which the run calls once, from its task or, for a run
        abandoned to a handler that ignores its cancellation, from outside it. The
        quarantine's own coroutine, not a wrapper: this is on every job's path."""
        return self._quarantine.enter(is_suspect)

    def leave(self, is_suspect: bool) -> None:
        self._quarantine.leave(is_suspect)

    async def admit_suspect(self, job: ClaimedJob) -> bool:
        """Inside a suspect's turn: False if it may not run after all (reclaimed while it
        waited: the new holder runs it)."""
        log.warning(
            "%s: job %s was in flight in %d crashed runtime(s); running it alone",
            self._name,
            job.id,
            job.recoveries,
        )
        return await self._mark_executing(job)

    async def _mark_executing(self, job: ClaimedJob) -> bool:
        """Tell Redis this suspect really runs now, so a crash is blamed on it; retried
        while Redis is away or refuses (running it unmarked could let a poison job loop
        forever). Fenced by the job's token: a newer lease's run is never marked by this."""
        retry_s = 0.05
        while True:
            try:
                return await self._broker.mark_executing(self._name, job.id, job.token)
            except BrokerError as exc:
                self._outages.note("mark", exc)
                await asyncio.sleep(retry_s)
                retry_s = min(retry_s * 2, 2.0)
