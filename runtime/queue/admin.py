"""Operator work on live queues: stats, peek, and purging or requeueing dead letters.

Everything pages through Redis, so it is safe against a running fleet and a deep queue:

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
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import resources
from typing import Any, Literal

import msgspec
import redis.asyncio as aioredis

from runtime.function import PRIORITIES
from runtime.jobs import envelope
from runtime.queue.instances import live_instances
from runtime.queue.keys import FunctionKeys, wake_channel

DLQ_BATCH = 200  # ids per script call: about a millisecond of Redis time (docs/admin.md)
MAX_BATCH = 1000
SAMPLE_SIZE = 10  # matched ids a DLQ report keeps to show the operator
PEEK_MAX_ENVELOPE_BYTES = 262_144  # larger envelopes are sized, not fetched, by peek
MINUTE_MS = 60_000
INSTANCES_NOTE = "runtime instances: those that beat in the last {window:g} s"
INSTANCE_WINDOW_S = 15.0
# The same rule as @function names; it also keeps a name from breaking the {ns:fn} hash tag.
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
Progress = Callable[["DlqReport"], None]  # told after each batch of a DLQ pass
# One script call of a DLQ pass: (mode 'run'|'scan'|'rotate', scan start, quota (rotate: ids
# to move), call id) -> reply.
BatchCall = Callable[[str, int, int, str], Awaitable[Any]]


def check_function_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(
            f"function name {name!r} must be letters, digits, '_' or '-' "
            "(at most 64, not starting with a digit)"
        )
    return name


class DlqFilter(msgspec.Struct, frozen=True):
    """Which dead jobs a purge or requeue takes: any of ``reasons`` (none: any reason), dead
    for at least ``older_than_s`` (0: any age)."""

    reasons: tuple[str, ...] = ()
    older_than_s: float = 0.0


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


class JobView(msgspec.Struct):
    """One job as ``peek`` shows it, decoded."""

    id: str
    lane: str  # the lane it waits in (a DLQ entry: its priority)
    state: str | None  # None: the id has no job record
    attempts: int
    recoveries: int
    age_s: float | None  # waiting since enqueued; a DLQ entry: since dead-lettered
    enqueued_ms: int | None
    dead_ms: int | None
    reason: str | None
    error: str | None
    envelope_bytes: int = 0
    payload: Any = None  # msgpack decoded to JSON-compatible values
    payload_error: str | None = None  # why the payload is not shown


class Peek(msgspec.Struct):
    function: str
    source: Literal["ready", "dlq"]
    now_ms: int
    total: int  # ids in the lanes (or the DLQ), of which ``jobs`` are the first
    jobs: list[JobView]


class DlqMatch(msgspec.Struct, array_like=True):
    id: str
    reason: str


class DlqReport(msgspec.Struct):
    """What a purge or requeue did (or, dry, would do) to one function's DLQ."""

    function: str
    action: Literal["purge", "requeue"]
    is_dry_run: bool
    dlq_length: int  # entries when the pass started
    scanned: int = 0  # entries looked at
    matched: int = 0  # purged / requeued (dry run: would be)
    kept: int = 0  # looked at and left in the DLQ (not matching, or not dead)
    stale: int = 0  # entries pointing at no dead job, dropped by an unfiltered purge
    rotated: int = 0  # moved head to tail unread, to finish a cycle stopped by the limit
    dlq_left: int = 0  # entries when the pass ended
    by_reason: dict[str, int] = {}
    sample: list[DlqMatch] = []
    calls: int = 0  # script calls
    max_batch: int = 0  # the most ids one call looked at
    max_call_ms: float = 0.0  # the slowest call, round trip included
    elapsed_s: float = 0.0


def _now_ms(reply: Sequence[Any]) -> int:
    return int(reply[0]) * 1000 + int(reply[1]) // 1000


def _opt_int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _text(value: Any) -> str | None:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _age_s(now_ms: int, at_ms: int | None) -> float | None:
    return None if at_ms is None else max(0.0, (now_ms - at_ms) / 1000)


def _payload(env: bytes, view: JobView) -> None:
    """Decode an envelope's payload into ``view`` (msgpack → JSON-compatible values)."""
    try:
        data = envelope.decode(env, max(len(env), 1)).payload
    except envelope.EnvelopeError as exc:
        view.payload_error = str(exc)
        return
    try:
        value = msgspec.msgpack.decode(data)
        msgspec.json.encode(value)  # e.g. an Ext or a map keyed by arrays: not JSON
    except (msgspec.DecodeError, TypeError, msgspec.EncodeError) as exc:
        view.payload_error = f"payload not shown as JSON: {exc}"
        return
    view.payload = value


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
        self._clock = clock
        self._sleep = sleep
        self._wake = wake_channel(namespace)
        lua = resources.files("runtime").joinpath("queue", "lua")
        self._purge = client.register_script(lua.joinpath("purge_dlq.lua").read_text("utf-8"))
        self._requeue = client.register_script(lua.joinpath("requeue_dlq.lua").read_text("utf-8"))

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
        """Depths, in-flight, DLQ, head ages and per-minute rates of each function.

        ``caps`` maps a function to its ``max_in_flight`` (0: none). Per-minute rates come
        from the minute tallies of settle/reclaim: this minute plus the previous one weighted
        by the part of it still inside the last 60 s (a sliding-window estimate).
        """
        keys = [self.keys(f) for f in functions]
        pipe = self.redis.pipeline(transaction=False)
        pipe.time()
        for k in keys:
            for lane in k.lanes:
                pipe.llen(lane)
                pipe.lindex(lane, 0)
            pipe.zcard(k.delayed)
            pipe.zcard(k.leased)
            pipe.llen(k.dlq)
            pipe.hgetall(k.stats)
        first = await pipe.execute()
        now_ms = _now_ms(first[0])
        minute, into_ms = divmod(now_ms, MINUTE_MS)
        per_fn = 3 * 2 + 4
        rows = [first[1 + i * per_fn : 1 + (i + 1) * per_fn] for i in range(len(keys))]

        pipe = self.redis.pipeline(transaction=False)
        for k, row in zip(keys, rows, strict=True):
            pipe.zcount(k.leased, "-inf", f"({now_ms}")
            pipe.hgetall(k.minute(minute))
            pipe.hgetall(k.minute(minute - 1))
            pipe.hgetall(k.prefix + "breaker")
            for head in row[1:6:2]:  # an empty lane still takes a slot in the reply
                if head:
                    pipe.hget(k.job(head.decode()), "enq")
                else:
                    pipe.echo("")
        second = await pipe.execute()

        weight = 1 - into_ms / MINUTE_MS
        out = []
        for i, (k, row) in enumerate(zip(keys, rows, strict=True)):
            expired, this_min, last_min, breakers, *heads = second[i * 7 : (i + 1) * 7]
            tally = {
                name: round(int(this_min.get(field, 0)) + weight * int(last_min.get(field, 0)), 1)
                for name in ("completed", "retried", "dead", "recovered")
                for field in (name.encode(),)
            }
            tally["failed"] = round(tally["retried"] + tally["dead"], 1)
            cap = (caps or {}).get(k.function) or None
            out.append(
                FunctionStats(
                    function=k.function,
                    is_registered=k.function in registered,
                    ready={p: int(row[2 * j]) for j, p in enumerate(PRIORITIES)},
                    delayed=int(row[6]),
                    in_flight=int(row[7]),
                    max_in_flight=cap,
                    lease_expired=int(expired),
                    dead=int(row[8]),
                    oldest_wait_s={
                        p: _age_s(now_ms, int(h)) if h else None
                        for p, h in zip(PRIORITIES, heads, strict=True)
                    },
                    per_minute=tally,
                    totals={key.decode(): int(v) for key, v in sorted(row[9].items())},
                    breakers={
                        inst.decode(): msgspec.json.decode(raw).get("state", "?")
                        for inst, raw in sorted(breakers.items())
                    },
                )
            )
        instances = await live_instances(self.redis, self.namespace, INSTANCE_WINDOW_S)
        return Stats(now_ms=now_ms, functions=out, instances=instances)

    async def peek(self, function: str, *, is_dlq: bool = False, count: int = 20) -> Peek:
        """The next ``count`` jobs in claim order (high, default, low), or the newest
        ``count`` DLQ entries, newest first; envelopes over PEEK_MAX_ENVELOPE_BYTES are sized
        but not fetched."""
        if not 1 <= count <= MAX_BATCH:
            raise ValueError(f"count={count} must be between 1 and {MAX_BATCH}")
        k = self.keys(function)
        pipe = self.redis.pipeline(transaction=False)
        pipe.time()
        if is_dlq:
            pipe.llen(k.dlq)
            pipe.lrange(k.dlq, -count, -1)
        else:
            for lane in k.lanes:
                pipe.llen(lane)
                pipe.lrange(lane, 0, count - 1)
        first = await pipe.execute()
        now_ms = _now_ms(first[0])
        lengths, pages = first[1::2], first[2::2]
        entries: list[tuple[str, str]] = []  # (id, lane)
        if is_dlq:
            entries = [(i.decode(), "") for i in reversed(pages[0])]
        else:
            for lane, page in zip(PRIORITIES, pages, strict=True):
                entries += [(i.decode(), lane) for i in page]
        entries = entries[:count]

        fields = ("state", "prio", "att", "rec", "enq", "end", "reason", "err")
        pipe = self.redis.pipeline(transaction=False)
        for job_id, _ in entries:
            pipe.hmget(k.job(job_id), fields)
            pipe.hstrlen(k.job(job_id), "env")
        second = await pipe.execute()
        views: list[JobView] = []
        for (job_id, lane), raw, env_len in zip(entries, second[::2], second[1::2], strict=True):
            state, prio, att, rec, enq, end, reason, err = (_text(v) for v in raw)
            enqueued, dead = _opt_int(enq), _opt_int(end) if state == "dead" else None
            views.append(
                JobView(
                    id=job_id,
                    lane=lane or prio or "default",
                    state=state,
                    attempts=int(att or 0),
                    recoveries=int(rec or 0),
                    age_s=_age_s(now_ms, dead if is_dlq and dead is not None else enqueued),
                    enqueued_ms=enqueued,
                    dead_ms=dead,
                    reason=reason,
                    error=err,
                    envelope_bytes=int(env_len),
                )
            )
        pipe = self.redis.pipeline(transaction=False)
        fetched: list[JobView] = []
        for view in views:
            if view.state is None:
                view.payload_error = "no job record for this id"
            elif view.envelope_bytes > PEEK_MAX_ENVELOPE_BYTES:
                view.payload_error = f"envelope of {view.envelope_bytes} bytes not fetched"
            else:
                pipe.hget(k.job(view.id), "env")
                fetched.append(view)
        for view, env in zip(fetched, await pipe.execute() if fetched else [], strict=True):
            _payload(env or b"", view)
        return Peek(function, "dlq" if is_dlq else "ready", now_ms, sum(lengths), views)

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
                keys=[k.dlq, k.stats, k.admin_call(call_id)],
                args=[k.prefix, self.batch, mode, start, *self._filter_args(dlq_filter)],
            )

        report = DlqReport(function, "purge", is_dry_run, await self.dlq_length(function))
        return await self._pass(report, k, call, None, None, progress)

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
        return await self._pass(report, k, call, limit, rate_per_s, progress)

    @staticmethod
    def _filter_args(dlq_filter: DlqFilter) -> list[Any]:
        return [round(dlq_filter.older_than_s * 1000), *dlq_filter.reasons]

    async def _pass(
        self,
        report: DlqReport,
        k: FunctionKeys,
        call: BatchCall,
        limit: int | None,
        rate_per_s: float | None,
        progress: Progress | None,
    ) -> DlqReport:
        """Visit the DLQ entries present at the start once, one batch per script call.

        A run takes ids off the head and puts kept ones back at the tail, so it stops after
        LLEN-at-start ids; a dry run reads forward from index 0 and changes nothing. With a
        rate, each call moves at most a tenth of a second's worth, and the next call waits
        until the jobs moved so far are due. A run stopped by its limit after keeping some
        entries rotates the rest of the cycle untouched, so the DLQ keeps its order.
        """
        started = self._clock()
        per_call = self.batch
        if rate_per_s is not None:
            per_call = max(1, min(self.batch, int(rate_per_s / 10)))
        mode = "scan" if report.is_dry_run else "run"
        while report.scanned < report.dlq_length:
            left = per_call if limit is None else min(per_call, limit - report.matched)
            if left <= 0:
                break
            if rate_per_s is not None and report.matched:
                delay = started + report.matched / rate_per_s - self._clock()
                if delay > 0:
                    await self._sleep(delay)
            if not await self._batch(report, call, mode, report.scanned, left):
                break  # the list got shorter under us (another purge, a requeue)
            if progress is not None:
                report.elapsed_s = self._clock() - started
                progress(report)
        rest = report.dlq_length - report.scanned
        if mode == "run" and limit is not None and report.kept and rest > 0:
            while report.rotated < rest:
                size = min(MAX_BATCH, rest - report.rotated)
                if not await self._batch(report, call, "rotate", 0, size):
                    break
        report.dlq_left = int(await self.redis.llen(k.dlq))
        report.elapsed_s = self._clock() - started
        return report

    async def _batch(
        self, report: DlqReport, call: BatchCall, mode: str, start: int, quota: int
    ) -> int:
        """One script call, its reply added to ``report``; returns the ids it looked at."""
        t0 = time.perf_counter()
        reply = await call(mode, start, quota, os.urandom(8).hex())
        report.max_call_ms = max(report.max_call_ms, (time.perf_counter() - t0) * 1000)
        consumed, matched, kept, stale, counts, sample = reply
        report.calls += 1
        report.max_batch = max(report.max_batch, int(consumed))
        if mode == "rotate":
            report.rotated += int(consumed)
            return int(consumed)
        report.scanned += int(consumed)
        report.matched += int(matched)
        report.kept += int(kept)
        report.stale += int(stale)
        for reason, n in zip(counts[::2], counts[1::2], strict=True):
            name = _text(reason) or ""
            report.by_reason[name] = report.by_reason.get(name, 0) + int(n)
        for job_id, reason in zip(sample[::2], sample[1::2], strict=True):
            if len(report.sample) < SAMPLE_SIZE:
                report.sample.append(DlqMatch(_text(job_id) or "", _text(reason) or ""))
        return int(consumed)
