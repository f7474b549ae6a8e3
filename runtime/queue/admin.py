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
from runtime.queue.admin_shards import merge_reports, merge_stats, recorded_counts
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
from runtime.queue.shards import shard_name

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

    def keys(self, function: str, shard: int = 0) -> FunctionKeys:
        return FunctionKeys(self.namespace, shard_name(check_function_name(function), shard))

    async def shards(self, function: str) -> int:
        """The shards to read: the highest count ever used (admin_shards.py)."""
        return (await recorded_counts(self.redis, self.namespace, [function]))[function]

    async def dlq_length(self, function: str) -> int:
        """Dead letters of the function, over every shard."""
        total = 0
        for shard in range(await self.shards(function)):
            total += int(await self.redis.llen(self.keys(function, shard).dlq))
        return total

    async def stats(
        self,
        functions: Sequence[str],
        caps: Mapping[str, int] | None = None,
        registered: Sequence[str] = (),
    ) -> Stats:
        """Depths, in-flight, DLQ, head ages and per-minute rates of each function;
        ``caps`` maps a function to its ``max_in_flight`` (0: none)."""
        counts = await recorded_counts(self.redis, self.namespace, list(functions))
        keys = [self.keys(f, shard) for f in functions for shard in range(counts[f])]
        stats = await read_stats(self.redis, self.namespace, keys, caps, registered)
        stats.functions = merge_stats(stats.functions)
        return stats

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
        peeks = [
            await read_peek(
                self.redis, self.keys(function, shard), is_dlq=is_dlq, count=count,
                with_traceback=with_traceback, offset=max(0, offset),
            )
            for shard in range(await self.shards(function))
        ]  # fmt: skip
        out = peeks[0]
        for more in peeks[1:]:  # shard after shard (no order holds across shards)
            out.total += more.total
            out.jobs = (out.jobs + more.jobs)[:count]
        return out

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
        reports = []
        for shard in range(await self.shards(function)):
            k = self.keys(function, shard)
            reports.append(await self._purge_pass(k, function, dlq_filter, is_dry_run, progress))
        return merge_reports(function, reports)

    async def _purge_pass(
        self,
        k: FunctionKeys,
        function: str,
        dlq_filter: DlqFilter,
        is_dry_run: bool,
        progress: Progress | None,
    ) -> DlqReport:
        def call(mode: str, start: int, quota: int, call_id: str) -> Awaitable[Any]:
            return self._purge(
                keys=[k.dlq, k.stats, k.admin_call(call_id), k.history],
                args=[k.prefix, self.batch, mode, start, *self._filter_args(dlq_filter)],
            )

        report = DlqReport(function, "purge", is_dry_run, int(await self.redis.llen(k.dlq)))
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
        recoveries reset, at most ``limit`` of them, at most ``rate_per_s`` a second; shard
        after shard for a sharded function."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit={limit} must be at least 1")
        if rate_per_s is not None and rate_per_s <= 0:
            raise ValueError(f"rate_per_s={rate_per_s} must be above zero")
        reports: list[DlqReport] = []
        for shard in range(await self.shards(function)):
            left = None if limit is None else limit - sum(r.matched for r in reports)
            if left is not None and left <= 0:
                break
            k = self.keys(function, shard)
            reports.append(
                await self._requeue_pass(k, function, dlq_filter, left, rate_per_s, is_dry_run,
                                         progress)
            )  # fmt: skip
        return merge_reports(function, reports)

    async def _requeue_pass(
        self,
        k: FunctionKeys,
        function: str,
        dlq_filter: DlqFilter,
        limit: int | None,
        rate_per_s: float | None,
        is_dry_run: bool,
        progress: Progress | None,
    ) -> DlqReport:
        older_ms, *reasons = self._filter_args(dlq_filter)

        def call(mode: str, start: int, quota: int, call_id: str) -> Awaitable[Any]:
            batch = quota if mode == "rotate" else self.batch
            return self._requeue(
                keys=[k.dlq, k.stats, k.admin_call(call_id), *k.lanes],
                args=[k.prefix, batch, mode, start, older_ms, quota, self._wake, k.function,
                      *reasons],
            )  # fmt: skip

        report = DlqReport(function, "requeue", is_dry_run, int(await self.redis.llen(k.dlq)))
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
        n, at = len(chosen), max(0, from_tail)
        reports = []
        # Each shard looks for the chosen ids in its own DLQ (an id is in one shard's only);
        # on a sharded function ``from_tail`` is a hint per shard, as peek pages shard after
        # shard: an id outside the window is left alone, as on one shard.
        for shard in range(await self.shards(function)):
            k = self.keys(function, shard)
            report = DlqReport(function, kind, False, int(await self.redis.llen(k.dlq)))

            def call(
                mode: str, start: int, quota: int, call_id: str, k: FunctionKeys = k
            ) -> Awaitable[Any]:
                record = k.admin_call(call_id)
                if action == "purge":
                    return self._purge(
                        keys=[k.dlq, k.stats, record, k.history],
                        args=[k.prefix, at, "pick", n, 0, *chosen],
                    )
                return self._requeue(
                    keys=[k.dlq, k.stats, record, *k.lanes],
                    args=[k.prefix, at, "pick", n, 0, n, self._wake, k.function, *chosen],
                )  # fmt: skip

            await self._passes.pick(report, call)
            reports.append(report)
        report = merge_reports(function, reports)
        report.dlq_left = await self.dlq_length(function)
        return report

    @staticmethod
    def _filter_args(dlq_filter: DlqFilter) -> list[Any]:
        return [round(dlq_filter.older_than_s * 1000), *dlq_filter.reasons]
