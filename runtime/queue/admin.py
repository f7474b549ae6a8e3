"""Operator work on live queues: stats, peek, and purging or requeueing dead letters.

:class:`Admin` is the one entry point, a method per command; the work is in
``admin_stats.py``, ``peek.py`` and ``dlq.py``. Everything pages through Redis, so it is
safe against a running fleet and a deep queue:

- ``stats`` is two pipelined round trips of O(1) commands per function (LLEN, ZCARD,
  ZCOUNT, HGETALL, LINDEX 0 and the head job's ``enq``), whatever the queues hold;
- ``peek`` reads at most ``count`` ids per lane (a bounded LRANGE);
- a DLQ pass (purge or requeue) is a series of script calls of at most ``batch`` ids each,
  every one atomic and re-reading each job's state (see ``lua/purge_dlq.lua``).

Nothing uses KEYS or SCAN: the functions are the ones the caller names (the registry's, or
``--function``). Times are Redis's (``TIME``), like every timestamp the scripts write.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Literal

import redis.asyncio as aioredis

from runtime.queue import scripts
from runtime.queue.admin_stats import Stats, read_stats
from runtime.queue.dlq import (
    DLQ_BATCH,
    MAX_BATCH,
    Clock,
    DlqFilter,
    DlqPasses,
    DlqReport,
    Progress,
    Sleep,
)
from runtime.queue.keys import FunctionKeys, wake_channel
from runtime.queue.peek import Peek, read_peek

# The same rule as @function names; it also keeps a name from breaking the {ns:fn} hash tag.
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")


def check_function_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(
            f"function name {name!r} must be letters, digits, '_' or '-' "
            "(at most 64, not starting with a digit)"
        )
    return name


class Admin:
    """The operator's view of a namespace's queues on one Redis (or Redis Cluster)."""

    def __init__(
        self,
        client: aioredis.Redis,
        namespace: str,
        *,
        batch: int = DLQ_BATCH,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not 1 <= batch <= MAX_BATCH:
            raise ValueError(f"batch={batch} must be between 1 and {MAX_BATCH}")
        self.redis = client
        self.namespace = namespace
        self.batch = batch
        self._passes = DlqPasses(client, batch=batch, clock=clock, sleep=sleep)
        self._wake = wake_channel(namespace)
        self._purge = scripts.register(client, "purge_dlq")
        self._requeue = scripts.register(client, "requeue_dlq")

    def keys(self, function: str) -> FunctionKeys:
        return FunctionKeys(self.namespace, check_function_name(function))

    async def dlq_length(self, function: str) -> int:
        return int(await self.redis.llen(self.keys(function).dlq))

    async def stats(
        self,
        functions: Sequence[str],
        caps: Mapping[str, int] | None = None,
        registered: Sequence[str] = (),
    ) -> Stats:
        """Depths, in-flight, DLQ, head ages and per-minute rates of each function;
        ``caps`` maps a function to its ``max_in_flight`` (0: none)."""
        keys = [self.keys(f) for f in functions]
        return await read_stats(self.redis, self.namespace, keys, caps, registered)

    async def peek(
        self,
        function: str,
        *,
        is_dlq: bool = False,
        count: int = 20,
        with_traceback: bool = False,
        offset: int = 0,
    ) -> Peek:
        """The next ``count`` jobs in claim order (high, default, low), or the newest
        ``count`` DLQ entries, newest first (with their tracebacks, if asked), after the
        ``offset`` newest."""
        if not 1 <= count <= MAX_BATCH:
            raise ValueError(f"count={count} must be between 1 and {MAX_BATCH}")
        k = self.keys(function)
        return await read_peek(
            self.redis,
            k,
            is_dlq=is_dlq,
            count=count,
            with_traceback=with_traceback,
            offset=max(0, offset),
        )

    async def purge_dlq(
        self,
        function: str,
        dlq_filter: DlqFilter = DlqFilter(),
        *,
        is_dry_run: bool = False,
        progress: Progress | None = None,
    ) -> DlqReport:
        """Delete the dead jobs matching the filter (hash, done marker and DLQ entry); an
        unfiltered purge also drops entries pointing at no dead job."""
        k = self.keys(function)

        def call(mode: str, start: int, quota: int, call_id: str) -> Awaitable[Any]:
            return self._purge(
                keys=[k.dlq, k.stats, k.admin_call(call_id), k.history],
                args=[k.prefix, self.batch, mode, start, *self._filter_args(dlq_filter)],
            )

        report = DlqReport(function, "purge", is_dry_run, await self.dlq_length(function))
        return await self._passes.run(report, k, call, None, None, progress)

    async def requeue_dlq(
        self,
        function: str,
        dlq_filter: DlqFilter = DlqFilter(),
        *,
        limit: int | None = None,
        rate_per_s: float | None = None,
        is_dry_run: bool = False,
        progress: Progress | None = None,
    ) -> DlqReport:
        """Move matching dead jobs back to their ready lane (oldest first), attempts and
        recoveries reset, at most ``limit`` of them, at most ``rate_per_s`` a second."""
        k = self.keys(function)
        if limit is not None and limit < 1:
            raise ValueError(f"limit={limit} must be at least 1")
        if rate_per_s is not None and rate_per_s <= 0:
            raise ValueError(f"rate_per_s={rate_per_s} must be above zero")
        older_ms, *reasons = self._filter_args(dlq_filter)

        def call(mode: str, start: int, quota: int, call_id: str) -> Awaitable[Any]:
            batch = quota if mode == "rotate" else self.batch
            return self._requeue(
                keys=[k.dlq, k.stats, k.admin_call(call_id), *k.lanes],
                args=[k.prefix, batch, mode, start, older_ms, quota, self._wake, k.function,
                      *reasons],
            )  # fmt: skip

        report = DlqReport(function, "requeue", is_dry_run, await self.dlq_length(function))
        return await self._passes.run(report, k, call, limit, rate_per_s, progress)

    async def pick_dlq(
        self, function: str, action: str, ids: Sequence[str], *, from_tail: int = 0
    ) -> DlqReport:
        """Requeue or purge the chosen DLQ entries (at most ``MAX_BATCH``), one atomic script
        call; the same report as a pass. They are looked for where they were shown,
        ``from_tail`` entries from the newest end (``lua/_pick.lua``): one bounded window,
        whatever the DLQ's length."""
        if action not in ("purge", "requeue"):
            raise ValueError(f"action={action!r} must be 'purge' or 'requeue'")
        kind: Literal["purge", "requeue"] = "purge" if action == "purge" else "requeue"
        chosen = list(dict.fromkeys(ids))
        if not 1 <= len(chosen) <= MAX_BATCH:
            raise ValueError(f"{len(chosen)} ids chosen: choose 1 to {MAX_BATCH}")
        k = self.keys(function)
        report = DlqReport(function, kind, False, await self.dlq_length(function))
        n, at = len(chosen), max(0, from_tail)

        def call(mode: str, start: int, quota: int, call_id: str) -> Awaitable[Any]:
            record = k.admin_call(call_id)
            if action == "purge":
                return self._purge(
                    keys=[k.dlq, k.stats, record], args=[k.prefix, at, "pick", n, 0, *chosen]
                )
            return self._requeue(
                keys=[k.dlq, k.stats, record, *k.lanes],
                args=[k.prefix, at, "pick", n, 0, n, self._wake, k.function, *chosen],
            )  # fmt: skip

        await self._passes.pick(report, call)
        report.dlq_left = await self.dlq_length(function)
        return report

    @staticmethod
    def _filter_args(dlq_filter: DlqFilter) -> list[Any]:
        return [round(dlq_filter.older_than_s * 1000), *dlq_filter.reasons]
