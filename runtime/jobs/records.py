"""Jobs as Redis hands them out and keeps them: a leased job (from a claim, a heartbeat's
adoption or a handoff message), a claim's reply, and a job's stored record.

Plain values: the broker builds them from script replies and hashes, ``parse_handoff``
from the message enqueue.lua publishes to a parked worker.

Nothing read from Redis is trusted: every value goes through one parser here that returns
the value or an ``Invalid`` saying why (``as_int``, ``as_text``, ``as_job``), and a stored
record is read by ``as_record``, which never raises and names the fields it could not read
(``JobRecord.corrupt``). The scripts check records before they touch them
(``queue/lua/_records.lua``); this is the same rule on the Python side.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from runtime.jobs import progress as progress_field
from runtime.jobs.progress import Progress

JobState = Literal["queued", "delayed", "running", "completed", "dead", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "dead", "cancelled"})


class ClaimedJob(msgspec.Struct):
    """One leased job as the claim returned it."""

    id: str
    token: str
    envelope: bytes
    attempts: int  # failed attempts before this one
    recoveries: int
    ready_ms: int  # when it last became ready (enqueued, promoted or put back)


MAX_INT = 2**63 - 1  # Redis integers are signed 64-bit
_INT_RE = re.compile(rb"-?[0-9]{1,19}")


class Invalid(msgspec.Struct, frozen=True):
    """Why a value read from Redis could not be parsed (the parsers return it, never raise)."""

    why: str


def as_int(raw: object, *, low: int = 0, high: int = MAX_INT) -> int | Invalid:
    """An integer reply or field (int, or decimal digits in bytes/str) in [low, high]."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, bytes | str):
        data = raw.encode("latin-1", "replace") if isinstance(raw, str) else raw
        if not _INT_RE.fullmatch(data):
            return Invalid(f"not an integer: {data[:40]!r}")
        value = int(data)
    else:
        return Invalid(f"not an integer: a {type(raw).__name__}")
    if not low <= value <= high:
        return Invalid(f"integer {value} out of range [{low}, {high}]")
    return value


def as_text(raw: object) -> str | Invalid:
    """A text reply or field: UTF-8 bytes, or str."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bytes):
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return Invalid(f"not UTF-8: {raw[:40]!r}")
    return Invalid(f"not text: a {type(raw).__name__}")


def int_field(value: Any, default: int = 0) -> int:
    """An integer field of a reply or hash; ``default`` when absent or unreadable."""
    parsed = as_int(value) if value is not None else default
    return default if isinstance(parsed, Invalid) else parsed


def _count(value: object) -> int | None:
    """A count as a script writes it, quickly: an int or ASCII digits (at most 18, so
    within MAX_INT) and not negative, or nil (0); None for anything else (parsed the long
    way)."""
    if value is None:
        return 0
    if type(value) is int:
        return value if 0 <= value <= MAX_INT else None
    if type(value) is bytes and 0 < len(value) <= 18 and value.isdigit():
        return int(value)
    return None


def as_job(j: object) -> ClaimedJob | Invalid:
    """A job as claim.lua and extend.lua return it: {id, token, env, att, rec, ready_ms}."""
    if not isinstance(j, list | tuple) or len(j) != 6:
        return Invalid(f"not a job reply: {j!r:.80}")
    job_id, token, env, att, rec, ready = j
    # The reply as the scripts write it (a hash's counts come as ASCII digits), checked in
    # one go: a claim parses hundreds of these. Anything else: the field-by-field parse.
    tok, n_att, n_rec, at_ms = _count(token), _count(att), _count(rec), _count(ready)
    if type(job_id) is bytes and tok and n_att is not None and n_rec is not None and at_ms:
        with contextlib.suppress(UnicodeDecodeError):
            envelope = env if type(env) is bytes else b""
            return ClaimedJob(job_id.decode(), str(tok), envelope, n_att, n_rec, at_ms)
    job_id, token = as_text(j[0]), as_int(j[1], low=1)
    envelope = j[2] if isinstance(j[2], bytes) else b""
    attempts, recoveries = as_int(j[3] or 0), as_int(j[4] or 0)
    ready_ms = as_int(j[5] or 0)
    for value in (job_id, token, attempts, recoveries, ready_ms):
        if isinstance(value, Invalid):
            return value
    assert isinstance(job_id, str) and isinstance(token, int)  # noqa: S101 — narrows types the loop above already checked
    return ClaimedJob(
        job_id,
        str(token),
        envelope,
        int_field(attempts),
        int_field(recoveries),
        int_field(ready_ms),
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
    has_more: bool = False  # stopped at its scan budget (bad ids) with ids left: claim again
    dead: int = 0  # bad ids the script dead-lettered (no record, or a corrupt one)
    unreadable: int = 0  # job replies this side could not parse (dropped; their leases expire)


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
    corrupt: str | None = None  # the fields that could not be read, and why (None: sound)
    traceback: str | None = None  # of the failure ``error`` describes, if it raised
    progress: Progress | None = None  # the last its handler reported (ctx.progress)
    cancel_requested_ms: int | None = None  # when a cancel was asked (running: pending)

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL


STATES: frozenset[str] = frozenset(
    {"queued", "delayed", "running", "completed", "dead", "cancelled"}
)


def as_record(job_id: str, function: str, fields: Mapping[bytes, bytes]) -> JobRecord:
    """A job's stored hash as a record; never raises. A field that does not parse reads as
    its default and is named in ``corrupt``; an unknown state reads as ``corrupt``."""
    problems: list[str] = []

    def text(name: str, default: str | None) -> str | None:
        raw = fields.get(name.encode())
        if raw is None:
            return default
        value = as_text(raw)
        if isinstance(value, Invalid):
            problems.append(f"{name}: {value.why}")
            return raw.decode("utf-8", "replace")
        return value

    def number(name: str) -> int | None:
        raw = fields.get(name.encode())
        if raw is None:
            return None
        value = as_int(raw)
        if isinstance(value, Invalid):
            problems.append(f"{name}: {value.why}")
            return None
        return value

    state = text("state", None)
    if state not in STATES:
        problems.append(f"state: {state!r} is not a job state")
        state = "corrupt"
    record = JobRecord(
        id=job_id,
        function=function,
        state=state,
        priority=text("prio", "default") or "default",
        attempts=number("att") or 0,
        recoveries=number("rec") or 0,
        enqueued_ms=number("enq") or 0,
        started_ms=number("start"),
        finished_ms=number("end"),
        result=fields.get(b"res"),
        reason=text("reason", None),
        error=text("err", None),
        traceback=text("tb", None),
    )
    raw_progress = fields.get(b"prg")
    if raw_progress is not None:
        parsed = progress_field.parse(raw_progress)
        if isinstance(parsed, str):
            problems.append(f"prg: {parsed}")
        else:
            record.progress = parsed
    if b"cxl" in fields:  # any value is a request (as the scripts read it); the time may be bad
        record.cancel_requested_ms = number("cxl") or 0
    record.corrupt = "; ".join(problems) or None
    return record


def iso_ms(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ``2026-12-02T12:00:00.123Z`` (None stays None)."""
    if ms is None:
        return None
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def job_fields(record: JobRecord) -> dict[str, Any]:
    """The fields every view of a job shows (``GET /v1/jobs/{id}``, ``runtime job --json``);
    each view adds its result, error and notes."""
    return {
        "id": record.id,
        "function": record.function,
        "state": record.state,
        "priority": record.priority,
        "attempts": record.attempts,
        "recoveries": record.recoveries,
        "enqueued_at": iso_ms(record.enqueued_ms),
        "started_at": iso_ms(record.started_ms),
        "finished_at": iso_ms(record.finished_ms),
        **progress_fields(record),
    }


def progress_fields(record: JobRecord) -> dict[str, Any]:
    """The job's progress and pending cancel request, where it has them."""
    out: dict[str, Any] = {}
    if record.progress is not None:
        p = record.progress
        out["progress"] = {
            "fraction": p.fraction,
            "message": p.message,
            "at": iso_ms(p.at_ms),
        }
    if record.cancel_requested_ms is not None:
        out["cancel_requested_at"] = iso_ms(record.cancel_requested_ms)
    return out
