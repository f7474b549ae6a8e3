"""Redis-outage warnings of one worker: whichever of its parts meets Redis failing (claim,
settle, heartbeat, reclaim, ...), at most one line per 5 s for each kind of failure, for
the whole worker. The line names the kind (unavailable, out of memory, refusing commands),
since each asks the operator for something else."""

from __future__ import annotations

import logging
import time

from runtime.errors import BrokerCommandError, BrokerUnavailable, RedisMemoryFull

log = logging.getLogger("runtime.worker")  # the worker's parts log as the worker
QUIET_S = 5.0


def kind_of(exc: BaseException) -> str:
    """What went wrong, in the operator's words."""
    match exc:
        case BrokerUnavailable():
            return "Redis unavailable"
        case RedisMemoryFull():
            return "Redis out of memory"
        case BrokerCommandError():
            return "Redis refused a command"
        case _:
            return "unexpected error"


class OutageLog:
    def __init__(self, function: str) -> None:
        self._name = function
        self._last_at: dict[str, float] = {}  # kind -> monotonic time of its last line

    def note(self, what: str, exc: BaseException) -> None:
        """Log that Redis failed during ``what``, unless a line just said the same."""
        kind = kind_of(exc)
        now = time.monotonic()
        if now - self._last_at.get(kind, -QUIET_S) >= QUIET_S:  # weather, not news
            self._last_at[kind] = now
            log.warning(
                "%s: %s during %s: %s",
                self._name,
                kind,
                what,
                exc,
                exc_info=exc if kind == "unexpected error" else None,
            )
