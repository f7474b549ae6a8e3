"""Exceptions become values here, in one place: ``classify(exc) -> Outcome``.

The dispatcher then does ``match outcome:`` and never needs a try/except of its own around
a handler. Reasons are the DLQ vocabulary: handler_error, timeout, rejected, decode_error,
unknown_function, worker_crashed, payload_too_large, corrupt_record.
"""

from __future__ import annotations

import os
import random
import traceback as tb
from collections.abc import Callable
from types import TracebackType
from typing import Literal

import msgspec

from runtime.errors import PayloadTooLarge, Reject, Retry
from runtime.function import Backoff

Reason = Literal[
    "handler_error",
    "timeout",
    "rejected",
    "decode_error",
    "unknown_function",
    "worker_crashed",
    "payload_too_large",
    "corrupt_record",  # its record in Redis failed the scripts' checks (lua/_records.lua)
]
MAX_ERROR_CHARS = 2000
# A stored traceback keeps its tail (the frames nearest the raise, and the exception line):
# bounded so that a deep recursion cannot grow a job record by megabytes.
MAX_TRACEBACK_BYTES = 8192


class Completed(msgspec.Struct, frozen=True):
    result: bytes  # JSON


class Failed(msgspec.Struct, frozen=True):
    """The attempt failed and counts toward max_attempts; may be retried."""

    reason: Literal["handler_error", "timeout"]
    error: str
    delay_s: float | None = None  # None: the function's backoff decides
    traceback: str = ""  # what the handler raised, formatted and bounded ("" if none)


class DeadLetter(msgspec.Struct, frozen=True):
    """Dead-letter at once, whatever attempts are left."""

    reason: Reason
    error: str
    is_attempt: bool = True  # counts toward attempts (False: the job never ran)
    traceback: str = ""


class Crashed(msgspec.Struct, frozen=True):
    """The process running the handler died: a recovery, not an attempt."""

    error: str


Outcome = Completed | Failed | DeadLetter | Crashed


def describe(exc: BaseException) -> str:
    """``TypeName: message``, bounded; never a traceback."""
    text = str(exc)
    name = type(exc).__name__
    # A child process's error is already "TypeName: message".
    remote = getattr(exc, "is_remote", False)
    out = text if remote else (f"{name}: {text}" if text else name)
    return out[:MAX_ERROR_CHARS]


def traceback_of(exc: BaseException) -> str:
    """The exception's traceback as text, its last ``MAX_TRACEBACK_BYTES`` bytes (UTF-8).

    Formatted only for a failure, never for a success. A child process's error carries the
    text the child formatted (``remote_traceback``)."""
    remote = getattr(exc, "remote_traceback", None)
    if isinstance(remote, str):
        text = remote
    else:
        try:
            text = "".join(tb.format_exception(type(exc), exc, _from_handler(exc.__traceback__)))
        except Exception as fmt_exc:  # a __str__ that raises: name it, go on
            text = f"(traceback not formatted: {type(fmt_exc).__name__})"
    return bounded_tail(text, MAX_TRACEBACK_BYTES)


_RUNTIME_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _from_handler(frames: TracebackType | None) -> TracebackType | None:
    """The traceback without its leading frames in the runtime's own code (the call into the
    handler), so it starts where the handler's code does; all of it if none is left."""
    first = frames
    while first is not None and first.tb_frame.f_code.co_filename.startswith(_RUNTIME_DIR):
        first = first.tb_next
    return first or frames


def bounded_tail(text: str, max_bytes: int) -> str:
    """``text`` cut to its last ``max_bytes`` UTF-8 bytes, marked where it was cut."""
    data = text.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return text
    marker = "[... cut: the first part of the traceback is not kept]\n"
    keep = max_bytes - len(marker.encode())
    return marker + data[-keep:].decode("utf-8", "ignore")


def classify(exc: BaseException) -> Outcome:
    """Turn what a handler raised into an Outcome; any BaseException that is not a signal
    (KeyboardInterrupt, SystemExit, a CancelledError the runtime did not request, ...) is a
    ``handler_error`` naming its type. Whether a cancellation was the runtime's own is the
    caller's record, never this function's guess."""
    match exc:
        case Retry():
            return Failed("handler_error", f"Retry: {exc.reason}"[:MAX_ERROR_CHARS], exc.delay_s)
        case Reject():
            return DeadLetter("rejected", exc.reason[:MAX_ERROR_CHARS])
        case TimeoutError():
            return Failed("timeout", "attempt timed out")
        case PayloadTooLarge():
            return DeadLetter("payload_too_large", describe(exc), is_attempt=False)
        case msgspec.ValidationError() | msgspec.DecodeError():
            return DeadLetter("decode_error", describe(exc), is_attempt=False)
        case _:
            return Failed("handler_error", describe(exc), traceback=traceback_of(exc))


def handler_raised(exc: BaseException) -> Outcome:
    """What a handler itself raised, as an Outcome: its own TimeoutError (or a cancellation,
    or any other BaseException) is a handler error; the attempt's timeout is not raised by
    the handler but decided by the runtime."""
    if isinstance(exc, TimeoutError):
        error = f"{describe(exc)} (raised by the handler)"[:MAX_ERROR_CHARS]
        return Failed("handler_error", error, traceback=traceback_of(exc))
    return classify(exc)


def backoff_delay_s(
    attempt: int, backoff: Backoff, rand: Callable[[], float] = random.random
) -> float:
    """Full jitter: uniform(0, min(max_s, base_s * 2**(attempt-1))) for the n-th failure."""
    ceiling = min(backoff.max_s, backoff.base_s * (2 ** min(attempt - 1, 62)))
    return float(rand() * ceiling)
