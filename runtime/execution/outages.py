"""Redis-outage warnings of one worker: whichever of its parts meets the outage (claim,
settle, heartbeat, reclaim, ...), at most one line per 5 s for the whole worker."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("runtime.worker")  # the worker's parts log as the worker
QUIET_S = 5.0


class OutageLog:
    def __init__(self, function: str) -> None:
        self._name = function
        self._last_at = 0.0  # monotonic time of the last line

    def note(self, what: str, exc: BaseException) -> None:
        """Log that Redis was unavailable during ``what``, unless a line just said so."""
        now = time.monotonic()
        if now - self._last_at >= QUIET_S:  # weather, not news
            self._last_at = now
            log.warning("%s: Redis unavailable during %s: %s", self._name, what, exc)
