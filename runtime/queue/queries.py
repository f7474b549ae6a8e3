"""Reads of one namespace's jobs and queues: a job's record, waiting for its end, the job
an idempotency key names, queue depths and counters. ``RedisBroker`` (``broker.py``) is
these reads plus the transitions; nothing here writes, except the ``notify`` flag a wait
sets through the watch script.
"""

from __future__ import annotations

import time
from typing import cast

from runtime.errors import BrokerCommandError
from runtime.jobs.envelope import function_of
from runtime.jobs.records import Invalid, JobRecord, as_int, as_record, as_text
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
        # Shards per function as this process serves or produces it (set from the registry;
        # absent: the highest count ever recorded in Redis is used; see shards.py).
        self.shards: dict[str, int] = {}
        self._watch = scripts.register(client, "watch")

    def keys(self, function: str) -> FunctionKeys:
        keys = self._keys.get(function)
        if keys is None:
            keys = self._keys[function] = FunctionKeys(self.namespace, function)
        return keys

    async def ping(self) -> None:
        await self.redis.ping()

    async def job_keys(self, job_id: str) -> FunctionKeys:
        """The keys of the function (shard) that holds the job (sharded.py finds its shard)."""
        return self.keys(function_of(job_id))

    async def job(self, job_id: str) -> JobRecord | None:
        """The job's record, None if there is none. Never raises for what Redis holds: a
        key of another type, or fields that do not parse, read as a ``corrupt`` record."""
        function = function_of(job_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall((await self.job_keys(job_id)).job(job_id))
        (raw,) = await pipe.execute(raise_on_error=False)
        if isinstance(raw, BrokerCommandError) and "WRONGTYPE" in str(raw):
            return JobRecord(job_id, function, "corrupt", "default", 0, 0, 0,
                             corrupt="the job key is not a hash")  # fmt: skip
        if isinstance(raw, Exception):
            raise raw
        if not raw:
            return None
        return as_record(job_id, function, cast("dict[bytes, bytes]", raw))

    async def watch(self, job_id: str) -> None:
        """Ask the settle and reclaim scripts to announce this job's end (its notify flag)."""
        await self._watch(keys=[(await self.job_keys(job_id)).job(job_id)])

    async def wait(self, job_id: str, timeout_s: float) -> JobRecord | None:
        """Wait (blocking on Redis, no polling) until the job is terminal or time runs out.

        Returns the record as it is at the end (terminal or not), None for an unknown job.
        """
        deadline = time.monotonic() + timeout_s
        k = await self.job_keys(job_id)
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

    async def states(self, function: str, job_ids: list[str]) -> list[str | None]:
        """Each job's state (None: no record, or one that does not read), one HGET each,
        pipelined in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self.keys(function).job(job_id), "state")
        replies = await pipe.execute(raise_on_error=False) if job_ids else []
        out: list[str | None] = []
        for reply in replies:
            state = as_text(reply) if isinstance(reply, bytes) else None
            out.append(None if state is None or isinstance(state, Invalid) else state)
        return out

    async def idempotent_job(self, function: str, key: str) -> str | None:
        """The job an idempotency key already names, if any."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.keys(function).idem(key))
        (value,) = await pipe.execute(raise_on_error=False)
        if value is None or isinstance(value, BrokerCommandError):
            return None  # none, or a key of another type: no job it names
        if isinstance(value, Exception):
            raise value
        job_id = as_text(value)
        return None if isinstance(job_id, Invalid) else job_id

    async def backlog(self, function: str) -> int:
        """Jobs waiting (ready in any lane, or delayed) for one function."""
        k = self.keys(function)
        pipe = self.redis.pipeline(transaction=False)
        for lane in k.lanes:
            pipe.llen(lane)
        pipe.zcard(k.delayed)
        return sum(count(n) for n in await pipe.execute(raise_on_error=False))

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
        *depths, counters = await pipe.execute(raise_on_error=False)
        names = ("ready_high", "ready_default", "ready_low", "delayed", "in_flight", "dead")
        out = {name: count(n) for name, n in zip(names, depths, strict=True)}
        out.update(counters_of(counters))
        return out


def count(reply: object) -> int:
    """A depth reply (LLEN, ZCARD, ...); 0 for a key of another type (an error reply)."""
    value = as_int(reply)
    return 0 if isinstance(value, Invalid) else value


def counters_of(reply: object) -> dict[str, int]:
    """A counters hash (``stats``, ``minute:<m>``) as names to integers. A field whose name
    or value does not parse, or a key of another type, is left out (never raised)."""
    out: dict[str, int] = {}
    if not isinstance(reply, dict):
        return out
    for raw_name, raw_value in reply.items():
        name, value = as_text(raw_name), as_int(raw_value, low=-(2**63))
        if not isinstance(name, Invalid) and not isinstance(value, Invalid):
            out[name] = value
    return out
