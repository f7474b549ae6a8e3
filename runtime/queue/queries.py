"""Reads of one namespace's jobs and queues: a job's record, waiting for its end, the job
an idempotency key names, queue depths and counters. ``RedisBroker`` (``broker.py``) is
these reads plus the transitions; nothing here writes, except the ``notify`` flag a wait
sets through the watch script.
"""

from __future__ import annotations

import time
from typing import cast

from runtime.jobs.envelope import function_of
from runtime.jobs.records import JobRecord, int_field
from runtime.queue import scripts
from runtime.queue.connection import RedisClient
from runtime.queue.keys import FunctionKeys


class JobQueries:
    """The reads of a namespace's jobs, on one client."""

    def __init__(self, client: RedisClient, namespace: str, *, block_s: float) -> None:
        self.redis = client
        self.namespace = namespace
        self._block_s = block_s  # one blocking wait must end before the socket timeout
        self._keys: dict[str, FunctionKeys] = {}
        self._watch = scripts.register(client, "watch")

    def keys(self, function: str) -> FunctionKeys:
        keys = self._keys.get(function)
        if keys is None:
            keys = self._keys[function] = FunctionKeys(self.namespace, function)
        return keys

    async def ping(self) -> None:
        await self.redis.ping()

    async def job(self, job_id: str) -> JobRecord | None:
        function = function_of(job_id)
        raw = await self.redis.hgetall(self.keys(function).job(job_id))
        if not raw:
            return None
        fields = cast("dict[bytes, bytes]", raw)
        f = {key.decode(): value for key, value in fields.items()}
        return JobRecord(
            id=job_id,
            function=function,
            state=f.get("state", b"?").decode(),
            priority=f.get("prio", b"default").decode(),
            attempts=int_field(f.get("att")),
            recoveries=int_field(f.get("rec")),
            enqueued_ms=int_field(f.get("enq")),
            started_ms=int_field(f["start"]) if "start" in f else None,
            finished_ms=int_field(f["end"]) if "end" in f else None,
            result=f.get("res"),
            reason=f["reason"].decode() if "reason" in f else None,
            error=f["err"].decode() if "err" in f else None,
        )

    async def watch(self, job_id: str) -> None:
        """Ask the settle and reclaim scripts to announce this job's end (its notify flag)."""
        await self._watch(keys=[self.keys(function_of(job_id)).job(job_id)])

    async def wait(self, job_id: str, timeout_s: float) -> JobRecord | None:
        """Wait (blocking on Redis, no polling) until the job is terminal or time runs out.

        Returns the record as it is at the end (terminal or not), None for an unknown job.
        """
        deadline = time.monotonic() + timeout_s
        k = self.keys(function_of(job_id))
        # Ask the settle script to push a marker when the job ends; the marker list stays
        # (BLMOVE rotates it in place) so any number of waiters wake. Set only on a job that
        # exists, so that waiting on an expired id leaves no stray hash behind.
        await self._watch(keys=[k.job(job_id)])
        record = await self.job(job_id)
        while record is not None and not record.is_terminal:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            block = max(0.01, min(remaining, self._block_s))
            # Redis takes a float timeout; redis-py's annotation says int.
            timeout = cast("int", block)
            await self.redis.blmove(k.done(job_id), k.done(job_id), timeout, "LEFT", "RIGHT")
            record = await self.job(job_id)
        return record

    async def idempotent_job(self, function: str, key: str) -> str | None:
        """The job an idempotency key already names, if any."""
        value = await self.redis.get(self.keys(function).idem(key))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def backlog(self, function: str) -> int:
        """Jobs waiting (ready in any lane, or delayed) for one function."""
        k = self.keys(function)
        pipe = self.redis.pipeline(transaction=False)
        for lane in k.lanes:
            pipe.llen(lane)
        pipe.zcard(k.delayed)
        return sum(int(n) for n in await pipe.execute())

    async def stats(self, function: str) -> dict[str, int]:
        """Queue depths and counters of one function (O(1) commands, pipelined)."""
        k = self.keys(function)
        pipe = self.redis.pipeline(transaction=False)
        for lane in k.lanes:
            pipe.llen(lane)
        pipe.zcard(k.delayed)
        pipe.zcard(k.leased)
        pipe.llen(k.dlq)
        pipe.hgetall(k.stats)
        high, default, low, delayed, leased, dead, counters = await pipe.execute()
        out = {
            "ready_high": high,
            "ready_default": default,
            "ready_low": low,
            "delayed": delayed,
            "in_flight": leased,
            "dead": dead,
        }
        for key, value in counters.items():
            out[key.decode()] = int(value)
        return out
