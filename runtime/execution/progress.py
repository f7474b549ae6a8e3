"""Progress reports of one attempt (``ctx.progress``) on their way to the job's record.

A handler may report as often as it likes, from the event loop or from its thread; the
record is written at most once every ``MIN_INTERVAL_S`` per attempt, with the latest
report (a report that arrives while one waits replaces it). Writes go through the
progress script, fenced by the attempt's token, so a stopped or lost run never writes over
a newer one. A write that fails (Redis away) is dropped: progress is advisory, the next
report tries again. Nothing here blocks the handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable

from runtime.jobs import progress as progress_field
from runtime.jobs.progress import Progress

log = logging.getLogger("runtime.worker")
MIN_INTERVAL_S = 0.5

Write = Callable[[bytes], Awaitable[bool]]


class ProgressReporter:
    """Throttles one attempt's reports into at most one write per ``interval_s``."""

    def __init__(
        self,
        write: Write,
        *,
        interval_s: float = MIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._write = write
        self._interval_s = interval_s
        self._clock = clock
        self._wall_ms = wall_ms
        self._last = -interval_s  # when the last write started (clock)
        self._pending: Progress | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._is_closed = False
        self.writes = 0  # started, for tests and metrics

    def report(self, fraction: float, message: str) -> None:
        """A handler's report (already validated by Context.progress); any thread."""
        p = Progress(fraction, message, self._wall_ms())
        if threading.get_ident() == self._thread:
            self._offer(p)
        else:
            with contextlib.suppress(RuntimeError):  # a closed loop: the worker is gone
                self._loop.call_soon_threadsafe(self._offer, p)

    def close(self) -> None:
        """The attempt is over: a report still waiting its turn is written now (the last
        one, often "done", is the one a reader wants; it races the settle, and is refused
        if the settle lands first); nothing after it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending is not None and not self._is_closed:
            self._flush()
        self._is_closed = True

    def _offer(self, p: Progress) -> None:
        if self._is_closed:
            return
        self._pending = p
        if self._timer is not None or (self._task is not None and not self._task.done()):
            return  # a write is due or in flight: it (or the one after it) takes this one
        self._schedule()

    def _schedule(self) -> None:
        wait_s = self._last + self._interval_s - self._clock()
        if wait_s <= 0:
            self._flush()
        else:
            self._timer = self._loop.call_later(wait_s, self._flush)

    def _flush(self) -> None:
        self._timer = None
        p, self._pending = self._pending, None
        if p is None or self._is_closed:
            return
        self._last = self._clock()
        self.writes += 1
        self._task = self._loop.create_task(self._send(p))

    async def _send(self, p: Progress) -> None:
        try:
            await self._write(progress_field.encode(p))
        except Exception as exc:  # any Redis error: progress is advisory
            log.debug("progress write failed: %s", exc)
        if self._pending is not None and not self._is_closed:
            self._schedule()
