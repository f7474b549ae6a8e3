"""The supervisor of a process's long-lived tasks: claim loops, settle, heartbeat,
reclaimer, refresher, pub/sub listeners, the deploy watcher.

A supervised task that raises is logged with its traceback, counted
(``runtime_task_failures_total{task}``), reported down, and started again after a backoff
(0.1 s doubling to ``MAX_BACKOFF_S``; a run that lasted ``STEADY_S`` resets it). It is down
from its failure until its new run has lasted ``UP_AFTER_S``, so ``/readyz`` is unready only
while a task is really down, not for one failure it recovered from at once.

A task that returns ends (loops return when they are told to stop). A ``CancelledError``
the supervisor did not ask for (``Task.cancelling()`` is 0: it came from inside, e.g. a
library or a handler) is a failure like any other; one it asked for ends the task.

``stop()`` is bounded whatever the tasks do: a task that swallows its cancellation is
cancelled again every 0.1 s until the deadline, then left behind (and named in the log).

A loop that catches errors to retry calls :func:`raise_if_cancelled` in its handler: a
library may turn a cancellation into its own error (redis-py under load turns it into a
timeout, which the runtime sees as ``BrokerUnavailable``), and a loop that retried on it
would survive its own stop. The task's pending cancel request (``Task.cancelling()``) is
the runtime's own flag, whatever exception carried it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("runtime.supervisor")

MAX_BACKOFF_S = 1.0  # Redis back: every part runs again within 2 s
STEADY_S = 10.0
UP_AFTER_S = 0.5
RECANCEL_S = 0.1

# Process-wide failures per task kind (the part of the name before ':'), for /metrics.
FAILURES: Counter[str] = Counter()

Loop = Callable[[], Coroutine[Any, Any, None]]


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if the current task was asked to stop (its cancel request
    is still pending even if a library swallowed the ``CancelledError`` that carried it).

    For loops in tasks of their own (supervised ones): code that runs in a task already
    cancelled on purpose, as aiohttp's cleanup runs in its cancelled main task, must not
    call it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


def task_kind(name: str) -> str:
    """The metric label of a task: ``claim`` for ``claim:resize`` (bounded cardinality)."""
    return name.split(":", 1)[0]


class Supervisor:
    """Runs named tasks, restarting those that fail; one per owner (a worker, the app)."""

    def __init__(self, owner: str = "runtime") -> None:
        self._owner = owner
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._down: dict[str, str] = {}  # task name -> why, while it is down
        self._stopping = False

    def spawn(self, name: str, loop: Loop) -> asyncio.Task[None]:
        """Run ``loop()`` as the task ``name`` under supervision (restarted if it fails)."""
        if name in self._tasks and not self._tasks[name].done():
            raise ValueError(f"{self._owner}: a task named {name!r} is already running")
        task = asyncio.create_task(self._keep(name, loop), name=name)
        self._tasks[name] = task
        return task

    @property
    def down(self) -> dict[str, str]:
        """The tasks down now (failed, not yet running steadily again): name -> error."""
        return dict(self._down)

    @property
    def is_up(self) -> bool:
        """Every task spawned is running (or ended on its own) and none is down."""
        return not self._down

    def is_running(self, name: str) -> bool:
        task = self._tasks.get(name)
        return task is not None and not task.done() and name not in self._down

    async def join(self, name: str, timeout_s: float) -> bool:
        """Wait at most ``timeout_s`` for the task ``name`` to end by itself (a loop told to
        stop by its owner), restarts included; True if it ended."""
        deadline = time.monotonic() + timeout_s
        while (task := self._tasks.get(name)) is not None and not task.done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.wait({task}, timeout=left)
        return True

    async def stop(self, timeout_s: float = 2.0, names: list[str] | None = None) -> list[str]:
        """Cancel the tasks (all, or ``names``) and wait at most ``timeout_s``; returns the
        names of tasks still alive at the deadline (logged: they swallowed cancellation)."""
        chosen = names if names is not None else list(self._tasks)
        if names is None:
            self._stopping = True
        tasks = {n: t for n in chosen if (t := self._tasks.get(n)) is not None and not t.done()}
        deadline = time.monotonic() + timeout_s
        while tasks:
            for task in tasks.values():
                task.cancel()
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await asyncio.wait(tasks.values(), timeout=min(RECANCEL_S, left))
            tasks = {n: t for n, t in tasks.items() if not t.done()}
        for name in chosen:
            self._down.pop(name, None)
        if tasks:
            log.error(
                "%s: task(s) %s did not stop within %gs (a cancellation swallowed); left behind",
                self._owner,
                ", ".join(sorted(tasks)),
                timeout_s,
            )
        return sorted(tasks)

    async def _keep(self, name: str, loop: Loop) -> None:
        backoff_s = 0.1
        me = asyncio.current_task()
        while True:
            started = time.monotonic()
            up = asyncio.get_running_loop().call_later(UP_AFTER_S, self._down.pop, name, None)
            try:
                await loop()
                return  # a loop returns when it is told to stop
            except asyncio.CancelledError as exc:
                if self._stopping or (me is not None and me.cancelling()):
                    raise  # ours: end the task
                error: BaseException = exc  # from inside: a failure like any other
            except Exception as exc:
                error = exc
            finally:
                up.cancel()
            FAILURES[task_kind(name)] += 1
            self._down[name] = f"{type(error).__name__}: {error}"[:300]
            if time.monotonic() - started > STEADY_S:
                backoff_s = 0.1
            log.error(
                "%s: task %s failed; restarting it in %.1fs",
                self._owner,
                name,
                backoff_s,
                exc_info=(type(error), error, error.__traceback__),
            )
            await asyncio.sleep(backoff_s)  # a cancellation here is ours: it ends the task
            backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)
