"""Jobs as Redis hands them out and keeps them: a leased job (from a claim, a heartbeat's
adoption or a handoff message), a claim's reply, and a job's stored record.

Plain values: the broker builds them from script replies and hashes, ``parse_handoff``
from the message enqueue.lua publishes to a parked worker.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

JobState = Literal["queued", "delayed", "running", "completed", "dead"]
TERMINAL: frozenset[str] = frozenset({"completed", "dead"})


class ClaimedJob(msgspec.Struct):
    """One leased job as the claim returned it."""

    id: str
    token: str
    envelope: bytes
    attempts: int  # failed attempts before this one
    recoveries: int
    ready_ms: int  # when it last became ready (enqueued, promoted or put back)


def int_field(value: Any, default: int = 0) -> int:
    """An integer field of a reply or hash (bytes or int); ``default`` when absent."""
    return int(value) if value is not None else default


def claimed_job(j: list[Any]) -> ClaimedJob:
    """A job as claim.lua and extend.lua return it: {id, token, env, att, rec, ready_ms}."""
    return ClaimedJob(
        id=j[0].decode(),
        token=str(j[1]),
        envelope=j[2] or b"",
        attempts=int_field(j[3]),
        recoveries=int_field(j[4]),
        ready_ms=int_field(j[5]),
    )


def parse_handoff(data: bytes) -> tuple[str, ClaimedJob, int] | None:
    """(function, job, Redis ms) from a handoff message (enqueue.lua), None if malformed.

    A handed-off job is new: token 1, no attempts or recoveries, ready since ``now_ms``."""
    parts = data.split(b"\n", 3)
    if len(parts) != 4:
        return None
    function, job_id, now, env = parts
    try:
        now_ms = int(now)
        job = ClaimedJob(job_id.decode(), "1", env, 0, 0, now_ms)
        return function.decode(), job, now_ms
    except (ValueError, UnicodeDecodeError):
        return None


class Claim(msgspec.Struct):
    jobs: list[ClaimedJob]
    next_due_ms: int  # earliest delayed job, -1 if none
    now_ms: int  # Redis server time of the claim
    is_fleet_limited: bool  # max_in_flight cut the batch
    rate_ready_ms: int = -1  # rate limit cut the batch: when the next start is allowed


class JobRecord(msgspec.Struct):
    """A job as stored, for callers and operators."""

    id: str
    function: str
    state: str
    priority: str
    attempts: int
    recoveries: int
    enqueued_ms: int
    started_ms: int | None = None
    finished_ms: int | None = None
    result: bytes | None = None  # JSON of the handler's return value
    reason: str | None = None  # why it was dead-lettered (or the last failure)
    error: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL
