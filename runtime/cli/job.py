"""``runtime job ID [--wait S] [--json]``: one job as Redis keeps it, by the id ``invoke
--async`` (or ``POST /v1/functions/{name}/jobs``) gave: its state, attempts, timestamps,
and its result, or its error and the traceback of its last failed attempt.

Its exit status says how the job stands: 0 shown (completed, or any state without
``--wait``), 1 dead-lettered, or still unfinished when ``--wait`` ran out; 2 no such job.
Without ``--wait`` it only reads; ``--wait`` asks the settle script to announce the job's
end (the same watch flag ``invoke`` sets) and blocks on Redis, no polling.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import msgspec

from runtime.cli.exits import ExitStatus
from runtime.config.schema import Settings
from runtime.errors import UnknownJob
from runtime.jobs.envelope import function_of
from runtime.jobs.records import JobRecord, job_fields

JOB_COMMANDS = frozenset({"job"})
LABEL_WIDTH = 10


async def job_main(args: argparse.Namespace, settings: Settings, redis_url: str) -> ExitStatus:
    from runtime.queue.connection import connect
    from runtime.queue.sharded_reads import ShardedQueries

    function_of(args.job_id)  # a malformed id is refused before any connection
    redis = connect(settings.redis, redis_url)
    try:
        queries = ShardedQueries(redis, settings.namespace, block_s=settings.redis.block_s)
        if args.wait:
            record = await queries.wait(args.job_id, args.wait)
        else:
            record = await queries.job(args.job_id)
    finally:
        await redis.aclose()
    if record is None:
        raise UnknownJob(
            f"no job {args.job_id!r} in namespace {settings.namespace!r}: it was never "
            "enqueued there, or it ended longer ago than worker.keep_result_s and its record "
            "expired (check --redis and the namespace setting)"
        )
    print(msgspec.json.encode(job_json(record)).decode() if args.json else job_text(record))
    if record.state == "dead" or (args.wait and not record.is_terminal):
        if args.wait and not record.is_terminal:
            print(f"error: job {record.id} is still {record.state} after {args.wait:g}s; it "
                  "continues", file=sys.stderr)  # fmt: skip
        return ExitStatus.FAILED
    return ExitStatus.OK


def when(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ``2026-12-02 12:00:00.123 UTC`` (None stays None)."""
    if ms is None:
        return None
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{millis:03d} UTC"


def _result(record: JobRecord) -> tuple[Any, str | None]:
    """The stored result as a value, or None and why it is not shown (never trusted)."""
    try:
        return msgspec.json.decode(record.result or b"null"), None
    except (msgspec.DecodeError, RecursionError):
        return None, "res: the stored result is not JSON"


def job_json(record: JobRecord) -> dict[str, Any]:
    """The job as ``--json`` prints it: the fields of ``GET /v1/jobs/{id}``, plus the
    failure's reason, error and traceback."""
    out = job_fields(record)
    corrupt = [record.corrupt] if record.corrupt else []
    if record.state == "completed":
        out["result"], problem = _result(record)
        corrupt += [problem] if problem else []
    if record.error is not None:
        out["error"] = {"code": record.reason or "handler_error", "message": record.error}
        out["traceback"] = record.traceback
    if corrupt:
        out["corrupt"] = "; ".join(corrupt)
    return out


def job_text(record: JobRecord) -> str:
    """The job for a person: one ``label  value`` line each, the traceback last, indented."""
    state = record.state
    if record.state not in ("completed", "cancelled") and record.reason:
        state += f" ({'last failure: ' if record.state != 'dead' else ''}{record.reason})"
    rows: list[tuple[str, str | None]] = [
        ("job", record.id),
        ("function", record.function),
        ("state", state),
        ("priority", record.priority),
        ("attempts", f"{record.attempts} failed, {record.recoveries} recovered"),
        ("enqueued", when(record.enqueued_ms)),
        ("started", when(record.started_ms)),
        ("finished", when(record.finished_ms)),
    ]
    if record.progress is not None:
        p = record.progress
        rows.append(("progress", f"{p.fraction:.0%} {p.message}".rstrip() + f" ({when(p.at_ms)})"))
    if record.cancel_requested_ms is not None and not record.is_terminal:
        rows.append(("cancel", f"requested {when(record.cancel_requested_ms)}"))
    data = job_json(record)
    if "result" in data:
        rows.append(("result", msgspec.json.encode(data["result"]).decode()))
    if record.error is not None:
        rows.append(("error", " ".join(record.error.split())))
    if "corrupt" in data:
        rows.append(("corrupt", data["corrupt"]))
    lines = [f"{label:<{LABEL_WIDTH}}{value}" for label, value in rows if value is not None]
    if record.traceback:
        lines.append("traceback")
        lines += ["  " + line for line in record.traceback.rstrip().splitlines()]
    return "\n".join(lines)
