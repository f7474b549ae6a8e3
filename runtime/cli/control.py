"""``runtime jobs --function F`` (a function's run history) and ``runtime cancel ID``.

``jobs`` prints the newest finished runs first (completed, cancelled, dead), filtered by
``--state``, ``--reason``, ``--since`` and ``--until``, one bounded page per call: a last
line ``more: --cursor C`` says where the next page starts. ``--json`` prints the page as
``GET /v1/jobs`` answers it. ``cancel`` cancels a job: a queued or delayed one at once; a
running one is stopped by its worker within a heartbeat (the request is kept in the job's
record, so it holds if that worker dies).

Exit status: ``jobs`` 0; ``cancel`` 0 cancelled or requested, 1 the job had already ended,
2 no such job.
"""

from __future__ import annotations

import argparse
import json

from runtime.cli.exits import ExitStatus
from runtime.cli.job import when
from runtime.cli.table import table_text
from runtime.config.schema import Settings
from runtime.errors import UnknownJob
from runtime.jobs.envelope import function_of
from runtime.queue.control import HistoryPage

CONTROL_COMMANDS = frozenset({"jobs", "cancel"})


async def control_main(args: argparse.Namespace, settings: Settings, redis_url: str) -> ExitStatus:
    from runtime.queue.connection import connect
    from runtime.queue.control import JobControl

    if args.command == "cancel":
        function_of(args.job_id)  # a malformed id is refused before any connection
    redis = connect(settings.redis, redis_url)
    try:
        control = JobControl(
            redis,
            settings.namespace,
            keep_result_s=settings.worker.keep_result_s,
            block_s=settings.redis.block_s,
        )
        if args.command == "cancel":
            reply = await control.cancel(args.job_id)
        else:
            page = await control.history(
                args.function,
                state=args.state,
                reason=args.reason,
                since_ms=args.since,
                until_ms=args.until,
                cursor=args.cursor,
                limit=args.limit,
            )
    finally:
        await redis.aclose()
    if args.command == "jobs":
        print(json.dumps(page_json(page)) if args.json else page_text(page))
        return ExitStatus.OK
    if reply.outcome == "missing":
        raise UnknownJob(f"no job {args.job_id!r} in namespace {settings.namespace!r}")
    print(cancel_text(args.job_id, reply.outcome, reply.state))
    return ExitStatus.OK if reply.outcome in ("cancelled", "requested") else ExitStatus.FAILED


def cancel_text(job_id: str, outcome: str, state: str) -> str:
    if outcome == "cancelled":
        return f"{job_id}: cancelled (it was {state}; it will not run)"
    if outcome == "requested":
        return f"{job_id}: cancel requested; its worker stops it within a heartbeat"
    if outcome == "finished":
        return f"{job_id}: already ended ({state}); nothing to cancel"
    return f"{job_id}: not cancelled, its record is corrupt: {state}"


def page_json(page: HistoryPage) -> dict[str, object]:
    return page.as_json()


def _duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    return f"{ms} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def page_text(page: HistoryPage) -> str:
    rows = [("FINISHED", "JOB", "STATE", "REASON", "ATTEMPTS", "DURATION")]
    for run in page.jobs:
        rows.append((
            when(run.finished_ms) or "-",
            run.id,
            run.state,
            run.reason or "-",
            f"{run.attempts}+{run.recoveries}" if run.recoveries else str(run.attempts),
            _duration(run.duration_ms),
        ))  # fmt: skip
    text = table_text(rows, right=frozenset({4, 5})) if page.jobs else "no finished runs match"
    if page.next_cursor is not None:
        text += f"\nmore: --cursor {page.next_cursor}"
    return text
