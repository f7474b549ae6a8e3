"""What a handler gets besides its payload: who it is running for, and until when."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

LeaseExtender = Callable[[], Awaitable[float]]
# Takes a validated progress report (fraction in [0, 1], bounded message); thread-safe.
ProgressSink = Callable[[float, str], None]
MAX_PROGRESS_MESSAGE_CHARS = 200  # runtime.jobs.progress cuts a longer one to this


class JobLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger whose records carry the job id, function and attempt."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


async def _no_extender() -> float:
    raise RuntimeError(
        "extend_lease() is not available here: process handlers are heartbeated by their "
        "parent while they run, and a Context built by hand has no broker behind it"
    )


class Context:
    """Per-attempt facts for a handler.

    ``deadline`` is a ``time.monotonic()`` instant: the attempt is cancelled (async),
    abandoned (thread) or killed (process) when it passes. ``params`` are the operator's
    ``[params.<function>]`` settings.

    ``cancelled`` is a ``threading.Event`` set when the job's cancel is requested while this
    attempt runs (``DELETE /v1/jobs/{id}``, ``runtime cancel``, ``Client.cancel``): a
    ``def`` handler, which the runtime cannot stop, should check it between steps and
    return; whatever it returns then, the job ends ``cancelled``. (An ``async def``
    handler's task is cancelled as well; a process child is killed.)
    """

    __slots__ = (
        "_extend",
        "_progress",
        "attempt",
        "cancelled",
        "deadline",
        "function",
        "job_id",
        "logger",
        "params",
    )

    def __init__(
        self,
        *,
        job_id: str,
        function: str,
        attempt: int,
        deadline: float,
        params: Mapping[str, Any] | None = None,
        extend_lease: LeaseExtender | None = None,
        logger: logging.Logger | None = None,
        log_extra: Mapping[str, str] | None = None,
        progress: ProgressSink | None = None,
        cancelled: threading.Event | None = None,
    ) -> None:
        self.job_id = job_id
        self.function = function
        self.attempt = attempt
        self.deadline = deadline
        self.params: Mapping[str, Any] = params or {}
        self._extend = extend_lease or _no_extender
        self._progress = progress
        self.cancelled = cancelled or threading.Event()
        base = logger or logging.getLogger(f"runtime.handler.{function}")
        extra: dict[str, object] = {"job_id": job_id, "function": function, "attempt": attempt}
        extra.update(log_extra or {})  # e.g. trace_id and span_id, for a process handler
        self.logger = JobLogger(base, extra)

    @classmethod
    def for_test(cls, job_id: str = "test-job", function: str = "test", **kw: Any) -> Context:
        """A Context for calling a handler directly in a unit test (no Redis needed)."""
        kw.setdefault("attempt", 1)
        kw.setdefault("deadline", time.monotonic() + 60.0)
        return cls(job_id=job_id, function=function, **kw)

    @property
    def log(self) -> JobLogger:
        """The same as ``logger``: a logger whose lines carry the job's ids."""
        return self.logger

    @property
    def remaining_s(self) -> float:
        """Seconds left before this attempt's timeout."""
        return max(0.0, self.deadline - time.monotonic())

    async def extend_lease(self) -> float:
        """Renew this job's lease now (for long work that blocks the loop between awaits).

        The runtime already renews leases by heartbeat; call this after a long stretch of
        work that kept the event loop busy. Returns the new lease length in seconds.
        """
        return await self._extend()

    def progress(self, fraction: float, message: str = "") -> None:
        """Report how far this job is: ``fraction`` in [0, 1], a short ``message`` (cut to
        200 characters). Stored on the job (``GET /v1/jobs/{id}``, ``runtime job``) and
        streamed to ``GET /v1/jobs/{id}/events``; at most one write every 0.5 s per job (the
        latest report wins). Callable from the event loop or a handler's thread; ignored in
        a process child. Raises ValueError or TypeError for a bad fraction or message."""
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise TypeError(f"progress fraction must be a number in [0, 1], not {fraction!r:.40}")
        if not 0.0 <= float(fraction) <= 1.0:  # NaN fails this too
            raise ValueError(f"progress fraction must be in [0, 1], not {fraction!r}")
        if not isinstance(message, str):
            raise TypeError(f"progress message must be a str, not {type(message).__name__}")
        if len(message) > MAX_PROGRESS_MESSAGE_CHARS:
            message = message[: MAX_PROGRESS_MESSAGE_CHARS - 1] + "\u2026"
        if self._progress is not None:
            self._progress(float(fraction), message)
