"""Suspect jobs run alone, so a poison job cannot take innocent jobs down with it.

When a runtime process dies, every job it held is reclaimed and its ``recoveries`` counter
grows, whether it killed the process or only stood beside the one that did. Past
``max_recoveries`` a job is dead-lettered as ``worker_crashed``. If the jobs that were in
flight together were simply claimed together again, a poison job would kill the same
bystanders on every restart and take them to the dead-letter queue with it.

So a job that has already been in flight during ``SUSPECT_AFTER`` crashes (or fewer, when
``max_recoveries`` is lower; the rule is in ``runtime/jobs/suspects.py``) is a suspect: it
runs only when no other job runs in this process, and nothing else starts while it runs.
A bystander then completes on its own turn; the poison job crashes alone, and only its own
counter grows. A single crash (a deploy's SIGKILL, an OOM kill) costs nothing: its jobs
have one recovery and run normally.

A suspect is blamed for a crash only if it was executing: its worker marks it in Redis
(``exec`` = its token) when it starts it alone, and the reclaim script spares a suspect
without that mark. Otherwise a bystander waiting for its turn behind the poison job would
be blamed for the poison job's crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class Quarantine:
    """A process-wide gate: ordinary jobs share it, suspect jobs hold it alone.

    Suspects waiting take precedence: once one waits, no new ordinary job enters, so a
    busy process cannot starve it. The common path (no suspect anywhere) never awaits.
    Every state change is signalled synchronously, so a cancelled waiter can never leave
    the others waiting for a wake-up that does not come.
    """

    def __init__(self) -> None:
        self._shared = 0
        self._suspects_waiting = 0
        self._exclusive = False
        self._changed = asyncio.Event()

    @property
    def is_holding_suspect(self) -> bool:
        return self._exclusive

    async def enter(self, is_suspect: bool) -> None:
        """Wait for a turn: alone for a suspect, shared otherwise. Give it back with
        ``leave``, also from outside the task that took it (a run abandoned to a handler
        that ignores its cancellation gives its turn back while the handler runs on)."""
        if not is_suspect:
            if self._exclusive or self._suspects_waiting:  # else no coroutine, no lambda
                await self._until(lambda: not self._exclusive and not self._suspects_waiting)
            self._shared += 1
            return
        self._suspects_waiting += 1
        try:
            await self._until(lambda: not self._exclusive and self._shared == 0)
            self._exclusive = True
        finally:
            self._suspects_waiting -= 1
            self._signal()

    def leave(self, is_suspect: bool) -> None:
        if is_suspect:
            self._exclusive = False
            self._signal()
            return
        self._shared -= 1
        if self._suspects_waiting:  # only a waiting suspect waits for _shared to change
            self._signal()

    @asynccontextmanager
    async def ordinary(self) -> AsyncIterator[None]:
        await self.enter(is_suspect=False)
        try:
            yield
        finally:
            self.leave(is_suspect=False)

    @asynccontextmanager
    async def suspect(self) -> AsyncIterator[None]:
        await self.enter(is_suspect=True)
        try:
            yield
        finally:
            self.leave(is_suspect=True)

    async def _until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            await self._changed.wait()

    def _signal(self) -> None:
        """Wake every waiter (each re-checks its condition), then re-arm."""
        self._changed.set()
        self._changed = asyncio.Event()
