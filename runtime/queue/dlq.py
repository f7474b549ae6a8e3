"""Dead-letter passes (``runtime purge-dlq``, ``runtime requeue-dlq``): which dead jobs a
pass takes, what it reports, and the walk over a DLQ, one script call at a time.

A pass is a series of script calls of at most ``batch`` ids each, every one atomic and
re-reading each job's state (see ``lua/purge_dlq.lua``), so it is safe against a running
fleet and a deep DLQ. A call sent twice is applied once: its reply is kept under its
call id.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec
import redis.asyncio as aioredis

from runtime.queue.keys import FunctionKeys

DLQ_BATCH = 200  # ids per script call: about a millisecond of Redis time (docs/admin.md)
MAX_BATCH = 1000
SAMPLE_SIZE = 10  # matched ids a DLQ report keeps to show the operator
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
Progress = Callable[["DlqReport"], None]  # told after each batch of a DLQ pass
# One script call of a DLQ pass: (mode 'run'|'scan'|'rotate', scan start, quota (rotate: ids
# to move), call id) -> reply.
BatchCall = Callable[[str, int, int, str], Awaitable[Any]]


class DlqFilter(msgspec.Struct, frozen=True):
    """Which dead jobs a purge or requeue takes: any of ``reasons`` (none: any reason), dead
    for at least ``older_than_s`` (0: any age)."""

    reasons: tuple[str, ...] = ()
    older_than_s: float = 0.0


class DlqMatch(msgspec.Struct, array_like=True):
    id: str
    reason: str


class DlqReport(msgspec.Struct):
    """What a purge or requeue did (or, dry, would do) to one function's DLQ."""

    function: str
    action: Literal["purge", "requeue"]
    is_dry_run: bool
    dlq_length: int  # entries when the pass started
    scanned: int = 0  # entries looked at
    matched: int = 0  # purged / requeued (dry run: would be)
    kept: int = 0  # looked at and left in the DLQ (not matching, or not dead)
    stale: int = 0  # entries pointing at no dead job, dropped by an unfiltered purge
    rotated: int = 0  # moved head to tail unread, to finish a cycle stopped by the limit
    dlq_left: int = 0  # entries when the pass ended
    by_reason: dict[str, int] = {}
    sample: list[DlqMatch] = []
    calls: int = 0  # script calls
    max_batch: int = 0  # the most ids one call looked at
    max_call_ms: float = 0.0  # the slowest call, round trip included
    elapsed_s: float = 0.0


def reply_text(value: Any) -> str | None:
    """A bytes reply decoded (bad UTF-8 replaced); anything else as it is."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class DlqPasses:
    """Runs DLQ passes on one Redis: ``batch`` ids per script call, paced by ``clock`` and
    ``sleep`` when a pass has a rate."""

    def __init__(self, client: aioredis.Redis, *, batch: int, clock: Clock, sleep: Sleep) -> None:
        self.redis = client
        self.batch = batch
        self._clock = clock
        self._sleep = sleep

    async def run(
        self,
        report: DlqReport,
        k: FunctionKeys,
        call: BatchCall,
        limit: int | None,
        rate_per_s: float | None,
        progress: Progress | None,
    ) -> DlqReport:
        """Visit the DLQ entries present at the start once, one batch per script call.

        A run takes ids off the head and puts kept ones back at the tail, so it stops after
        LLEN-at-start ids; a dry run reads forward from index 0 and changes nothing. With a
        rate, each call moves at most a tenth of a second's worth, and the next call waits
        until the jobs moved so far are due. A run stopped by its limit after keeping some
        entries rotates the rest of the cycle untouched, so the DLQ keeps its order.
        """
        started = self._clock()
        per_call = self.batch
        if rate_per_s is not None:
            per_call = max(1, min(self.batch, int(rate_per_s / 10)))
        mode = "scan" if report.is_dry_run else "run"
        while report.scanned < report.dlq_length:
            left = per_call if limit is None else min(per_call, limit - report.matched)
            if left <= 0:
                break
            if rate_per_s is not None and report.matched:
                delay = started + report.matched / rate_per_s - self._clock()
                if delay > 0:
                    await self._sleep(delay)
            if not await self._batch(report, call, mode, report.scanned, left):
                break  # the list got shorter under us (another purge, a requeue)
            if progress is not None:
                report.elapsed_s = self._clock() - started
                progress(report)
        rest = report.dlq_length - report.scanned
        if mode == "run" and limit is not None and report.kept and rest > 0:
            while report.rotated < rest:
                size = min(MAX_BATCH, rest - report.rotated)
                if not await self._batch(report, call, "rotate", 0, size):
                    break
        report.dlq_left = int(await self.redis.llen(k.dlq))
        report.elapsed_s = self._clock() - started
        return report

    async def pick(self, report: DlqReport, call: BatchCall) -> DlqReport:
        """One 'pick' call (the chosen ids are bound into ``call``), its reply added."""
        started = self._clock()
        await self._batch(report, call, "pick", 0, 0)
        report.elapsed_s = self._clock() - started
        return report

    async def _batch(
        self, report: DlqReport, call: BatchCall, mode: str, start: int, quota: int
    ) -> int:
        """One script call, its reply added to ``report``; returns the ids it looked at."""
        t0 = time.perf_counter()
        reply = await call(mode, start, quota, os.urandom(8).hex())
        report.max_call_ms = max(report.max_call_ms, (time.perf_counter() - t0) * 1000)
        consumed, matched, kept, stale, counts, sample = reply
        report.calls += 1
        report.max_batch = max(report.max_batch, int(consumed))
        if mode == "rotate":
            report.rotated += int(consumed)
            return int(consumed)
        report.scanned += int(consumed)
        report.matched += int(matched)
        report.kept += int(kept)
        report.stale += int(stale)
        for reason, n in zip(counts[::2], counts[1::2], strict=True):
            name = reply_text(reason) or ""
            report.by_reason[name] = report.by_reason.get(name, 0) + int(n)
        for job_id, reason in zip(sample[::2], sample[1::2], strict=True):
            if len(report.sample) < SAMPLE_SIZE:
                report.sample.append(DlqMatch(reply_text(job_id) or "", reply_text(reason) or ""))
        return int(consumed)
