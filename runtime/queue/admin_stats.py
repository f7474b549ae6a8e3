"""The stats snapshot behind ``runtime stats``: per function, the lane depths, delayed,
in flight, expired leases, dead letters, the age of each lane's head job, per-minute
rates, the lifetime counters and the breaker state of each instance; plus the live
runtime instances.

Two pipelined round trips of O(1) commands per function (LLEN, ZCARD, ZCOUNT, HGETALL,
LINDEX 0 and the head job's ``enq``), whatever the queues hold. Times are Redis's
(``TIME``), like every timestamp the scripts write.

Every value is parsed, never trusted: a key of another type reads as empty, a counter that
is not an integer is left out of the totals, a breaker state that is not JSON shows as
``?``, and instance records that do not parse make the instance list unknown (None).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis

from runtime.errors import BrokerCommandError
from runtime.function import PRIORITIES
from runtime.jobs.records import Invalid, as_int, as_text
from runtime.queue.instances import live_instances
from runtime.queue.keys import FunctionKeys
from runtime.queue.queries import count, counters_of

MINUTE_MS = 60_000
INSTANCES_NOTE = "runtime instances: those that beat in the last {window:g} s"
INSTANCE_WINDOW_S = 15.0


class FunctionStats(msgspec.Struct):
    function: str
    is_registered: bool  # found in the functions folder (else named with --function)
    ready: dict[str, int]  # per lane: high, default, low
    delayed: int
    in_flight: int  # leased jobs (fleet-wide)
    max_in_flight: int | None  # the fleet cap from the registry; None: none or unknown
    lease_expired: int  # leases past their deadline, waiting for a reclaimer
    dead: int  # DLQ length
    oldest_wait_s: dict[str, float | None]  # per lane, age of the job at its head
    per_minute: dict[str, float]  # completed, failed (= retried + dead), retried, dead, recovered
    totals: dict[str, int]  # the {ns:fn}:stats counters since the queue was created
    breakers: dict[str, str] = {}  # instance (host:pid) -> circuit breaker state, if any

    @property
    def oldest_s(self) -> float | None:
        ages = [a for a in self.oldest_wait_s.values() if a is not None]
        return max(ages) if ages else None


class Stats(msgspec.Struct):
    now_ms: int  # Redis time
    functions: list[FunctionStats]
    instances: list[dict[str, Any]] | None = None  # None: not known (see instances_note)
    instances_note: str = INSTANCES_NOTE.format(window=INSTANCE_WINDOW_S)


def redis_now_ms(reply: Sequence[Any]) -> int:
    """A ``TIME`` reply (seconds, microseconds) in milliseconds."""
    return int(reply[0]) * 1000 + int(reply[1]) // 1000


def optional_int(raw: object) -> int | None:
    """An integer field that may be absent; None when absent or unreadable."""
    value = as_int(raw) if raw is not None else None
    return None if isinstance(value, Invalid) else value


def breaker_state(raw: object) -> str:
    """A breaker report's state (JSON ``{"state": ...}``), ``?`` when it does not parse."""
    try:
        state = msgspec.json.decode(raw).get("state", "?") if isinstance(raw, bytes) else "?"
    except (msgspec.DecodeError, AttributeError, RecursionError):
        return "?"
    return state if isinstance(state, str) else "?"


def age_s(now_ms: int, at_ms: int | None) -> float | None:
    """Seconds from ``at_ms`` to ``now_ms`` (never negative); None when ``at_ms`` is."""
    return None if at_ms is None else max(0.0, (now_ms - at_ms) / 1000)


async def read_stats(
    redis: aioredis.Redis,
    namespace: str,
    keys: Sequence[FunctionKeys],
    caps: Mapping[str, int] | None = None,
    registered: Sequence[str] = (),
) -> Stats:
    """Depths, in-flight, DLQ, head ages and per-minute rates of each function.

    ``caps`` maps a function to its ``max_in_flight`` (0: none). Per-minute rates come
    from the minute tallies of settle/reclaim: this minute plus the previous one weighted
    by the part of it still inside the last 60 s (a sliding-window estimate).
    """
    pipe = redis.pipeline(transaction=False)
    pipe.time()
    for k in keys:
        for lane in k.lanes:
            pipe.llen(lane)
            pipe.lindex(lane, 0)
        pipe.zcard(k.delayed)
        pipe.zcard(k.leased)
        pipe.llen(k.dlq)
        pipe.hgetall(k.stats)
    first = await pipe.execute(raise_on_error=False)
    now_ms = redis_now_ms(first[0])
    minute, into_ms = divmod(now_ms, MINUTE_MS)
    per_fn = 3 * 2 + 4
    rows = [first[1 + i * per_fn : 1 + (i + 1) * per_fn] for i in range(len(keys))]

    pipe = redis.pipeline(transaction=False)
    for k, row in zip(keys, rows, strict=True):
        pipe.zcount(k.leased, "-inf", f"({now_ms}")
        pipe.hgetall(k.minute(minute))
        pipe.hgetall(k.minute(minute - 1))
        pipe.hgetall(k.breaker)
        for head in row[1:6:2]:  # an empty lane still takes a slot in the reply
            if isinstance(head, bytes) and head:
                pipe.hget(k.raw_job(head), "enq")
            else:
                pipe.echo("")
    second = await pipe.execute(raise_on_error=False)

    weight = 1 - into_ms / MINUTE_MS
    out = []
    for i, (k, row) in enumerate(zip(keys, rows, strict=True)):
        expired, this_min, last_min, breakers, *heads = second[i * 7 : (i + 1) * 7]
        this_min, last_min = counters_of(this_min), counters_of(last_min)
        tally = {
            name: round(this_min.get(name, 0) + weight * last_min.get(name, 0), 1)
            for name in ("completed", "retried", "dead", "recovered")
        }
        tally["failed"] = round(tally["retried"] + tally["dead"], 1)
        cap = (caps or {}).get(k.function) or None
        out.append(
            FunctionStats(
                function=k.function,
                is_registered=k.function in registered,
                ready={p: count(row[2 * j]) for j, p in enumerate(PRIORITIES)},
                delayed=count(row[6]),
                in_flight=count(row[7]),
                max_in_flight=cap,
                lease_expired=count(expired),
                dead=count(row[8]),
                oldest_wait_s={
                    p: age_s(now_ms, optional_int(h))
                    for p, h in zip(PRIORITIES, heads, strict=True)
                },
                per_minute=tally,
                totals=dict(sorted(counters_of(row[9]).items())),
                breakers=dict(sorted(_breakers(breakers).items())),
            )
        )
    try:
        instances = await live_instances(redis, namespace, INSTANCE_WINDOW_S)
    except (BrokerCommandError, msgspec.DecodeError, ValueError, TypeError, RecursionError):
        instances = None  # the registry holds something that does not parse: not known
    return Stats(now_ms=now_ms, functions=out, instances=instances)


def _breakers(reply: object) -> dict[str, str]:
    if not isinstance(reply, dict):
        return {}
    out = {}
    for raw_name, raw in reply.items():
        name = as_text(raw_name)
        if isinstance(name, Invalid):
            name = bytes(raw_name).decode("utf-8", "replace")
        out[name] = breaker_state(raw)
    return out
