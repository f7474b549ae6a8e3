"""Settle entries: what the settle script (lua/settle.lua) does with one leased job, one
struct per operation, and ``settle_argv``, their encoding into the script's ARGV.

Each entry names the job and the fencing token of the lease it settles: the script refuses
an entry whose token is no longer the job's (the lease was reclaimed meanwhile). ``op`` is
the operation's letter in the script.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, assert_never

import msgspec

from runtime.jobs.outcome import Reason


class _Entry(msgspec.Struct, frozen=True):
    op: ClassVar[str]  # the operation's letter in settle.lua
    id: str
    token: str


class Complete(_Entry, frozen=True):
    """Completed: keep the result for keep_result_s."""

    op: ClassVar[str] = "C"
    result: bytes  # JSON


class RetryLater(_Entry, frozen=True):
    """A failed attempt with attempts left: delayed, then ready again."""

    op: ClassVar[str] = "R"
    delay_ms: int
    error: str
    reason: Reason
    traceback: str = ""  # stored as the job's ``tb`` ("": the field is removed)


class SendToDlq(_Entry, frozen=True):
    """Dead-letter it. Named apart from the outcome ``DeadLetter``, one of the two outcomes
    that end here (the other: a ``Failed`` attempt with no attempts left)."""

    op: ClassVar[str] = "D"
    reason: Reason
    error: str
    is_attempt: bool  # counts toward the job's attempts
    traceback: str = ""  # stored as the job's ``tb`` ("": the field is removed)


class Release(_Entry, frozen=True):
    """Back to the front of its lane, no counter changed (a drain, a refused handoff)."""

    op: ClassVar[str] = "L"


class WorkerCrashed(_Entry, frozen=True):
    """The process child running it died: requeued as a recovery, or dead-lettered as
    ``worker_crashed`` past ``max_recoveries``."""

    op: ClassVar[str] = "K"
    max_recoveries: int
    error: str


SettleEntry = Complete | RetryLater | SendToDlq | Release | WorkerCrashed


def settle_argv(entries: Iterable[SettleEntry]) -> list[bytes | str]:
    """The entries' part of the settle script's ARGV: 7 values each, ``op, id, token, a,
    b, c, d``, whose a, b, c, d mean what settle.lua's header says for that op."""
    argv: list[bytes | str] = []
    for entry in entries:
        a: bytes | str
        d = ""
        match entry:
            case Complete():
                a, b, c = entry.result, "", ""
            case RetryLater():
                a, b, c, d = str(entry.delay_ms), entry.error, entry.reason, entry.traceback
            case SendToDlq():
                a, b, c = entry.reason, entry.error, "1" if entry.is_attempt else "0"
                d = entry.traceback
            case Release():
                a, b, c = "", "", ""
            case WorkerCrashed():
                a, b, c = str(entry.max_recoveries), entry.error, ""
            case _:
                assert_never(entry)
        argv += (entry.op, entry.id, entry.token, a, b, c, d)
    return argv
