"""Exceptions become values here, in one place: ``classify(exc) -> Outcome``.

The dispatcher then does ``match outcome:`` and never needs a try/except of its own around
a handler. Reasons are the DLQ vocabulary: handler_error, timeout, rejected, decode_error,
unknown_function, worker_crashed, payload_too_large, corrupt_record.
"""

from __future__ import annotations

import random
from collections.abc import Callable
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


class Completed(msgspec.Struct, frozen=True):
    result: bytes  # JSON


class Failed(msgspec.Struct, frozen=True):
    """The attempt failed and counts toward max_attempts; may be retried."""

    reason: Literal["handler_error", "timeout"]
    error: str
    delay_s: float | None = None  # None: the function's backoff decides


class DeadLetter(msgspec.Struct, frozen=True):
    """Dead-letter at once, whatever attempts are left."""

    reason: Reason
    error: str
    is_attempt: bool = True  # counts toward attempts (False: the job never ran)


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
            return Failed("handler_error", describe(exc))


def handler_raised(exc: BaseException) -> Outcome:
    """What a handler itself raised, as an Outcome: its own TimeoutError (or a cancellation,
    or any other BaseException) is a handler error; the attempt's timeout is not raised by
    the handler but decided by the runtime."""
    if isinstance(exc, TimeoutError):
        return Failed("handler_error", f"{describe(exc)} (raised by the handler)"[:MAX_ERROR_CHARS])
    return classify(exc)


def backoff_delay_s(
    attempt: int, backoff: Backoff, rand: Callable[[], float] = random.random
) -> float:
    """Full jitter: uniform(0, min(max_s, base_s * 2**(attempt-1))) for the n-th failure."""
    ceiling = min(backoff.max_s, backoff.base_s * (2 ** min(attempt - 1, 62)))
    return float(rand() * ceiling)
