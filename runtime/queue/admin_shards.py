"""The admin commands over every shard of a sharded function (shards.py): how many shards
to read (the highest count ever recorded), and one function's figures summed from its
shards' (stats, DLQ passes)."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis

from runtime.queue.admin_stats import FunctionStats
from runtime.queue.dlq import SAMPLE_SIZE, DlqReport
from runtime.queue.keys import NamespaceKeys
from runtime.queue.shards import split_name


async def recorded_counts(
    redis: aioredis.Redis, namespace: str, functions: Sequence[str]
) -> dict[str, int]:
    """Each function's highest shard count ever used (1 when none is recorded or the
    record does not parse), one pipelined ZSCORE each."""
    if not functions:
        return {}
    key = NamespaceKeys(namespace).shards
    pipe = redis.pipeline(transaction=False)
    for function in functions:
        pipe.zscore(key, function)
    out = {}
    for function, raw in zip(functions, await pipe.execute(raise_on_error=False), strict=True):
        ok = isinstance(raw, int | float) and 1 <= raw < 1_000
        out[function] = int(raw) if ok else 1
    return out


def merge_stats(rows: list[FunctionStats]) -> list[FunctionStats]:
    """One row per function: its shards' rows (named ``fn#k``) added to shard 0's."""
    out: dict[str, FunctionStats] = {}
    for row in rows:
        function = split_name(row.function)[0]
        first = out.get(function)
        if first is None:  # shard 0 comes first (read_stats keeps the order asked)
            out[function] = row
            continue
        for lane, n in row.ready.items():
            first.ready[lane] = first.ready.get(lane, 0) + n
        first.delayed += row.delayed
        first.in_flight += row.in_flight
        first.lease_expired += row.lease_expired
        first.dead += row.dead
        for lane, age in row.oldest_wait_s.items():
            mine = first.oldest_wait_s.get(lane)
            first.oldest_wait_s[lane] = age if mine is None else max(mine, age or 0.0)
        for name, rate in row.per_minute.items():
            first.per_minute[name] = round(first.per_minute.get(name, 0) + rate, 1)
        for name, total in row.totals.items():
            first.totals[name] = first.totals.get(name, 0) + total
    return list(out.values())


def merge_reports(function: str, reports: list[DlqReport]) -> DlqReport:
    """One DLQ pass report from its shards' passes."""
    out = msgspec.structs.replace(
        reports[0], function=function, by_reason=dict(reports[0].by_reason)
    )
    for report in reports[1:]:
        for name in ("dlq_length", "scanned", "matched", "kept", "stale", "rotated", "dlq_left",
                     "calls"):  # fmt: skip
            setattr(out, name, getattr(out, name) + getattr(report, name))
        for reason, n in report.by_reason.items():
            out.by_reason[reason] = out.by_reason.get(reason, 0) + n
        out.sample = (out.sample + report.sample)[:SAMPLE_SIZE]
        out.max_batch = max(out.max_batch, report.max_batch)
        out.max_call_ms = max(out.max_call_ms, report.max_call_ms)
        out.elapsed_s += report.elapsed_s
    return out
