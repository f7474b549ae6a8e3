"""How the producer tools send: on an open-loop timetable (:class:`Pacer`), with a progress
bar on a terminal (:class:`Progress`)."""

from __future__ import annotations

import asyncio
import sys
import time


class Pacer:
    """Open-loop pacing: the n-th send waits for its slot on a fixed timetable."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._start = time.monotonic()
        self._n = 0

    async def wait(self, sends: int = 1) -> None:
        """Wait for the next slot and take ``sends`` slots (a batch sent at once)."""
        if self._interval:
            due = self._start + self._n * self._interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        self._n += sends

    def batch(self, limit: int) -> int:
        """How many sends to make at once: up to ``limit`` when unpaced, else what the
        timetable holds in a millisecond (at least one), so batching never moves a send
        more than a millisecond off its slot."""
        if not self._interval:
            return limit
        return max(1, min(limit, int(0.001 / self._interval)))


class Progress:
    """A bar of ``done`` out of ``total`` and the rate so far, redrawn in place on a
    terminal's stderr at most five times a second; nothing when stderr is not a terminal."""

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self._shown = sys.stderr.isatty()
        self._last = 0.0
        self._start = time.monotonic()

    def update(self, done: int, extra: str = "", *, force: bool = False) -> None:
        now = time.monotonic()
        if not self._shown or (now - self._last < 0.2 and not force):
            return
        self._last = now
        width = 30
        filled = int(width * done / self.total) if self.total else width
        rate = done / max(now - self._start, 1e-9)
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
            f"{rate:.0f}/s {extra}\x1b[K"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self._shown:
            sys.stderr.write("\n")
