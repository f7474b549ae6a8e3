"""The reads of sharded functions (shards.py): how many shards to read, where a job lives,
and depths and counters summed over the shards."""

from __future__ import annotations

import logging
import time
from typing import Any

from runtime.errors import BrokerPermissionError
from runtime.jobs.envelope import function_of
from runtime.queue.connection import RedisClient
from runtime.queue.keys import FunctionKeys, NamespaceKeys
from runtime.queue.queries import JobQueries
from runtime.queue.shards import made_suffix_shard, shard_name

log = logging.getLogger("runtime.broker")
COUNT_TTL_S = 2.0  # how long a shard count read from Redis is trusted
RECORD_EVERY_S = 60.0


class ShardedQueries(JobQueries):
    """``JobQueries`` over every shard of a function."""

    def __init__(self, client: RedisClient, namespace: str, *, block_s: float, **rest: Any) -> None:
        # ``rest``: what the next class (RedisBroker, in ShardedBroker) takes besides
        super().__init__(client, namespace, block_s=block_s, **rest)
        self._ns_keys = NamespaceKeys(self.namespace)
        self._counts: dict[str, tuple[int, float]] = {}  # function -> (recorded, read at)
        # function -> (the count this process made sure is recorded, when): written again
        # after RECORD_EVERY_S, so a Redis that lost its data gets it back
        self._recorded: dict[str, tuple[int, float]] = {}

    def shard_keys(self, function: str, shard: int) -> FunctionKeys:
        return self.keys(shard_name(function, shard))

    async def recorded_shards(self, function: str, *, fresh: bool = False) -> int:
        """The highest shard count ever used for ``function`` (1 if none was recorded)."""
        cached = self._counts.get(function)
        now = time.monotonic()
        if cached is not None and not fresh and now - cached[1] < COUNT_TTL_S:
            return cached[0]
        try:
            raw = await self.redis.zscore(self._ns_keys.shards, function)
        except BrokerPermissionError as exc:
            # A Redis user set up before sharded functions (docs/security.md): its unsharded
            # functions work as before; a sharded one is read on its configured count only.
            _refused(function, exc)
            raw = None
        value = 1
        if isinstance(raw, int | float) and 1 <= raw < 1_000:
            value = int(raw)
        self._counts[function] = (value, now)
        return value

    async def record_shards(self, function: str, shards: int) -> None:
        """Raise the recorded count to ``shards`` (once per process and count)."""
        if shards <= 1:
            return
        done, at = self._recorded.get(function, (1, 0.0))
        now = time.monotonic()
        if done >= shards and now - at < RECORD_EVERY_S:
            return
        try:
            await self.redis.zadd(self._ns_keys.shards, {function: shards}, gt=True)
        except BrokerPermissionError as exc:
            _refused(function, exc)
        self._recorded[function] = (shards, now)

    async def read_shards(self, function: str, *, fresh: bool = False) -> int:
        """Every shard to read: below the configured count and the highest ever recorded."""
        mine = self.shards.get(function, 1)
        await self.record_shards(function, mine)
        return max(mine, await self.recorded_shards(function, fresh=fresh))

    async def job_keys(self, job_id: str) -> FunctionKeys:
        """The keys of the shard holding ``job_id``: where its made id says (no lookup on an
        unsharded function), else the shard where its record exists, found with one
        pipelined EXISTS per shard (a caller-chosen id, or a count raised meanwhile)."""
        function = function_of(job_id)
        made = made_suffix_shard(job_id[len(function) + 1 :])
        for fresh in (False, True):
            shards = await self.read_shards(function, fresh=fresh)
            if shards == 1 and not made:
                return self.keys(function)
            order = list(range(shards))
            if made is not None and made < shards:
                order.remove(made)
                order.insert(0, made)
            pipe = self.redis.pipeline(transaction=False)
            for shard in order:
                pipe.exists(self.shard_keys(function, shard).job(job_id))
            found = await pipe.execute(raise_on_error=False)
            for shard, exists in zip(order, found, strict=True):
                if exists == 1:
                    return self.shard_keys(function, shard)
        return self.shard_keys(function, made or 0)

    async def backlog(self, function: str) -> int:
        total = 0
        for shard in range(await self.read_shards(function)):
            total += await super().backlog(shard_name(function, shard))
        return total

    async def stats(self, function: str) -> dict[str, int]:
        """Depths and counters of every shard, summed (the shard count as ``shards``)."""
        shards = await self.read_shards(function)
        out: dict[str, int] = {}
        for shard in range(shards):
            for name, value in (await super().stats(shard_name(function, shard))).items():
                out[name] = out.get(name, 0) + value
        if shards > 1:
            out["shards"] = shards
        return out

    async def states(self, function: str, job_ids: list[str]) -> list[str | None]:
        if await self.read_shards(function) == 1:
            return await super().states(function, job_ids)
        records = [await self.job(job_id) for job_id in job_ids]
        return [None if record is None else record.state for record in records]

    async def idempotent_job(self, function: str, key: str) -> str | None:
        for shard in range(await self.read_shards(function)):
            found = await super().idempotent_job(shard_name(function, shard), key)
            if found is not None:
                return found
        return None


_warned_at = -3600.0


def _refused(function: str, exc: BrokerPermissionError) -> None:
    """Say (at most hourly) that the shard count cannot be kept, and what that costs."""
    global _warned_at
    now = time.monotonic()
    if now - _warned_at >= 3600:
        _warned_at = now
        log.warning(
            "%s: the Redis user may not read or write the shard count ({ns}:shards): %s; "
            "a function whose shards are lowered later would leave jobs in the shards it "
            "no longer reads (docs/security.md gives each role's rules)",
            function,
            exc,
        )
