"""Job control on top of the reads: cancel a job, record a running job's progress, and page
through a function's run history.

- ``cancel`` runs ``lua/cancel.lua``: a queued or delayed job ends ``cancelled`` at once; a
  running one gets the request in its record (its worker learns of it by heartbeat, and
  settle and reclaim end it ``cancelled`` whatever its holder does).
- ``report_progress`` runs ``lua/progress.lua``, fenced by the holder's token.
- ``history`` reads the ``history`` zset (finished job id -> finish ms, written by settle,
  reclaim and cancel) newest first and each listed record's summary, in two round trips,
  with a bounded scan per page: a page looks at no more than ``MAX_SCAN`` entries, and
  hands back a cursor where it stopped, so a filter that matches little costs pages, not a
  long call. What Redis holds is parsed totally: an entry whose record is gone (swept since)
  or not finished (requeued from the DLQ) is skipped; unreadable fields read as absent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, cast

import msgspec

from runtime.jobs.records import TERMINAL, Invalid, as_int, as_text, iso_ms
from runtime.queue import scripts
from runtime.queue.connection import RedisClient
from runtime.queue.keys import done_channel, wake_channel
from runtime.queue.queries import JobQueries

MAX_PAGE = 500  # jobs one history page may return
MAX_SCAN = 2000  # history entries one page may look at (each one HMGET, pipelined)
_CURSOR = re.compile(r"([0-9]{1,15})\.([0-9]{1,9})")
_SUMMARY = ("state", "reason", "att", "rec", "enq", "start", "end", "prio")


class CancelReply(msgspec.Struct, frozen=True):
    """What a cancel did: ``cancelled`` (it was queued or delayed: ``state`` says which),
    ``requested`` (running: its worker stops it), ``finished`` (already terminal:
    ``state`` says how), ``missing`` (no such job), ``corrupt`` (``state`` says why)."""

    outcome: str
    state: str


class RunSummary(msgspec.Struct, frozen=True):
    """One finished run, as the history lists it."""

    id: str
    state: str
    reason: str | None
    attempts: int
    recoveries: int
    priority: str
    enqueued_ms: int | None
    started_ms: int | None
    finished_ms: int
    duration_ms: int | None  # of its last attempt: finish - start


class HistoryPage(msgspec.Struct, frozen=True):
    jobs: list[RunSummary]
    next_cursor: str | None  # None: nothing older to look at

    def as_json(self) -> dict[str, Any]:
        """The page as ``GET /v1/jobs`` and ``runtime jobs --json`` answer it."""
        return {"jobs": [run_fields(run) for run in self.jobs], "next_cursor": self.next_cursor}


def run_fields(run: RunSummary) -> dict[str, Any]:
    """One run as the HTTP API and the CLI's JSON show it (times as ISO 8601)."""
    return {
        "id": run.id,
        "state": run.state,
        "reason": run.reason,
        "attempts": run.attempts,
        "recoveries": run.recoveries,
        "priority": run.priority,
        "enqueued_at": iso_ms(run.enqueued_ms),
        "started_at": iso_ms(run.started_ms),
        "finished_at": iso_ms(run.finished_ms),
        "duration_ms": run.duration_ms,
    }


def parse_cursor(cursor: str) -> tuple[int, int]:
    """(finish ms, entries at that ms already seen) of a history cursor; ValueError if it is
    not one this module made."""
    m = _CURSOR.fullmatch(cursor)
    if m is None:
        raise ValueError(f"not a history cursor: {cursor[:40]!r}")
    return int(m[1]), int(m[2])


def _opt_int(raw: object) -> int | None:
    if raw is None:
        return None
    value = as_int(raw)
    return None if isinstance(value, Invalid) else value


def _opt_text(raw: object) -> str | None:
    if raw is None:
        return None
    value = as_text(raw)
    return None if isinstance(value, Invalid) else value


def summary(job_id: str, finished_ms: int, fields: Sequence[Any]) -> RunSummary | None:
    """A history entry's summary from its HMGET reply; None when it is no finished run."""
    if not isinstance(fields, list | tuple) or len(fields) != len(_SUMMARY):
        return None  # an error reply: a key of another type
    state = _opt_text(fields[0])
    if state not in TERMINAL:
        return None  # gone (swept since), or requeued from the DLQ and not finished again
    start, end = _opt_int(fields[5]), _opt_int(fields[6])
    end = finished_ms if end is None else end
    return RunSummary(
        id=job_id,
        state=state,
        reason=_opt_text(fields[1]),
        attempts=_opt_int(fields[2]) or 0,
        recoveries=_opt_int(fields[3]) or 0,
        priority=_opt_text(fields[7]) or "default",
        enqueued_ms=_opt_int(fields[4]),
        started_ms=start,
        finished_ms=end,
        duration_ms=max(0, end - start) if start is not None else None,
    )


class JobControl(JobQueries):
    """Cancel, progress and the run history, on one client."""

    def __init__(
        self, client: RedisClient, namespace: str, *, keep_result_s: int, block_s: float
    ) -> None:
        super().__init__(client, namespace, block_s=block_s)
        self.keep_result_s = keep_result_s
        self._cancel = scripts.register(client, "cancel")
        self._progress = scripts.register(client, "progress")

    async def cancel(self, job_id: str) -> CancelReply:
        """Cancel a job (see ``CancelReply``). Raises PayloadError for an id that names no
        function, BrokerError when Redis does not answer."""
        k = await self.job_keys(job_id)  # its shard's, on a sharded function
        res = await self._cancel(
            keys=[k.delayed, *k.lanes, k.results, k.history, k.stats],
            args=[
                k.prefix,
                job_id,
                self.keep_result_s,
                done_channel(self.namespace),
                wake_channel(self.namespace),
                k.function,  # the shard's name: a wake names the shard (dispatcher.py)
            ],
        )
        outcome = _opt_text(res[0]) if isinstance(res, list) and len(res) == 2 else None
        if outcome is None:
            return CancelReply("corrupt", f"unreadable reply from cancel: {res!r:.80}")
        return CancelReply(outcome, _opt_text(res[1]) or "")

    async def report_progress(self, function: str, job_id: str, token: str, value: bytes) -> bool:
        """Store a running job's progress if ``token`` still holds it; False if refused."""
        res = await self._progress(keys=[self.keys(function).job(job_id)], args=[token, value])
        return bool(res == 1)

    async def history(
        self,
        function: str,
        *,
        state: str | None = None,
        reason: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> HistoryPage:
        """Finished runs of ``function``, newest first, filtered; at most ``limit`` of them
        and at most ``MAX_SCAN`` entries looked at. ValueError for a bad cursor."""
        limit = max(1, min(limit, MAX_PAGE))
        top, seen = (until_ms, 0) if cursor is None else parse_cursor(cursor)
        k = self.keys(function)
        scan = min(MAX_SCAN, max(4 * limit, 200))
        entries = await self.redis.zrevrangebyscore(
            k.history,
            "+inf" if top is None else top,
            "-inf" if since_ms is None else since_ms,
            start=seen,
            num=scan,
            withscores=True,
        )
        pipe = self.redis.pipeline(transaction=False)
        listed: list[tuple[str | None, int]] = []
        for raw_id, score in cast("list[tuple[bytes, float]]", entries):
            job_id = _opt_text(raw_id)
            listed.append((job_id, int(score)))
            if job_id is not None:
                pipe.hmget(k.job(job_id), list(_SUMMARY))
        replies = iter(await pipe.execute(raise_on_error=False) if entries else [])
        jobs: list[RunSummary] = []
        # The cursor: the finish ms reached, and how many entries at that ms were looked at.
        at, n = (top, seen) if top is not None else (-1, 0)
        examined = 0
        for job_id, score in listed:
            examined += 1
            at, n = (at, n + 1) if score == at else (score, 1)
            if job_id is None:
                continue  # an id that is not text: not one the runtime lists
            run = summary(job_id, score, next(replies))
            if run is None or (state and run.state != state) or (reason and run.reason != reason):
                continue
            jobs.append(run)
            if len(jobs) == limit:
                break
        more = examined < len(entries) or len(entries) == scan
        return HistoryPage(jobs, f"{at}.{n}" if more and at >= 0 else None)
