"""The broker of sharded functions: each transition of ``RedisBroker`` on the shard that
holds the job (shards.py says where). A function of one shard takes exactly the path it
always took: same keys, same script calls; the one addition is the shard count's read
(a ZSCORE per function and process every COUNT_TTL_S, sharded_reads.py).

- enqueue: the shard is in the job id (made ids) or a hash of it (caller-chosen ids);
  ``pick_shard`` spreads made ids round-robin (an idempotency key picks by its hash, so
  the key always lives in one shard). ``enqueue_many`` sends one pipeline per shard.
- claim: every shard below the count read (``read_shards``), starting at a shard chosen by
  the claim id (so a replayed claim visits them in the same order), each for what the
  others left; ``max_in_flight`` and the rate limit are split between the shards so their
  sum never exceeds the function's.
- settle, heartbeat, extend, mark_exec: by the shard in each lease's token.
- reclaim and unpark: every shard.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Sequence

import msgspec

from runtime.errors import BrokerError
from runtime.function import Priority
from runtime.jobs.records import Claim, ClaimedJob
from runtime.jobs.settle import SettleEntry
from runtime.queue.broker import RedisBroker, new_claim_id
from runtime.queue.connection import RedisClient
from runtime.queue.control import HistoryPage, parse_cursor
from runtime.queue.enqueue_args import NewJob
from runtime.queue.sharded_reads import ShardedQueries
from runtime.queue.shards import (
    cap_share,
    made_suffix_shard,
    own_id_shard,
    rate_share,
    shard_name,
    split_token,
    tag_token,
)


class ShardedBroker(ShardedQueries, RedisBroker):
    def __init__(
        self, client: RedisClient, namespace: str, *, keep_result_s: int, block_s: float
    ) -> None:
        super().__init__(client, namespace, keep_result_s=keep_result_s, block_s=block_s)
        self._turn: dict[str, int] = {}  # function -> the next shard a made id goes to

    async def pick_shard(self, function: str, idempotency_key: str | None = None) -> int:
        """The shard of a new job whose id the runtime makes (put in the id: new_job_id)."""
        shards = self.shards.get(function) or await self.recorded_shards(function)
        if shards == 1:
            return 0
        if idempotency_key is not None:
            return own_id_shard(idempotency_key, shards)
        turn = self._turn.get(function, 0)
        self._turn[function] = turn + 1
        return turn % shards

    async def _shard_of(self, function: str, job: NewJob) -> int:
        suffix = job.job_id[len(function) + 1 :]
        if job.own_id:
            shards = self.shards.get(function) or await self.recorded_shards(function)
            shard = own_id_shard(suffix, shards)
        else:
            shard = made_suffix_shard(suffix) or 0
        if shard > 0:  # recorded before any job is in a shard a worker might not read
            await self.record_shards(function, max(shard + 1, self.shards.get(function, 1)))
        return shard

    async def enqueue(
        self,
        function: str,
        job_id: str,
        envelope: bytes,
        *,
        priority: Priority = "default",
        delay_s: float | None = None,
        idempotency_key: str | None = None,
        notify: bool = False,
        own_id: bool = False,
    ) -> tuple[str, bool]:
        item = NewJob(job_id, envelope, priority, delay_s, idempotency_key, own_id)
        shard = await self._shard_of(function, item)
        return await super().enqueue(
            shard_name(function, shard),
            job_id,
            envelope,
            priority=priority,
            delay_s=delay_s,
            idempotency_key=idempotency_key,
            notify=notify,
            own_id=own_id,
        )

    async def enqueue_many(
        self, function: str, jobs: Sequence[NewJob]
    ) -> list[tuple[str, bool] | BrokerError]:
        """One pipeline per shard, all at once; replies in the order of ``jobs``."""
        groups: dict[int, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(await self._shard_of(function, job), []).append(i)
        if list(groups) == [0]:
            return await super().enqueue_many(function, jobs)
        order = list(groups.items())
        replies = await asyncio.gather(
            *(
                super(ShardedBroker, self).enqueue_many(
                    shard_name(function, shard), [jobs[i] for i in items]
                )
                for shard, items in order
            )
        )
        out: list[tuple[str, bool] | BrokerError] = [BrokerError("not sent")] * len(jobs)
        for (_, items), got in zip(order, replies, strict=True):
            for i, reply in zip(items, got, strict=True):
                out[i] = reply
        return out

    async def claim(
        self,
        function: str,
        count: int,
        *,
        lease_ms: int,
        max_in_flight: int,
        rate_interval_ms: float = 0.0,
        rate_burst: int = 1,
        claim_id: str | None = None,
        park_channel: str = "",
        park_ttl_ms: int = 0,
    ) -> Claim:
        """Lease up to ``count`` jobs from the function's shards. Each shard's claim has its
        own claim id (``<claim id>-<shard>``): a replay replays each shard's part. A worker
        left with room parks on each shard it found empty (claim.lua); the shards after the
        one that filled the claim are not visited this time (their parks expire or their
        handoffs are released), and the next claim starts elsewhere."""
        shards = await self.read_shards(function)
        if shards == 1:
            return await super().claim(
                function, count, lease_ms=lease_ms, max_in_flight=max_in_flight,
                rate_interval_ms=rate_interval_ms, rate_burst=rate_burst, claim_id=claim_id,
                park_channel=park_channel, park_ttl_ms=park_ttl_ms,
            )  # fmt: skip
        claim_id = claim_id or new_claim_id()
        start = zlib.crc32(claim_id.encode()) % shards
        out = Claim([], -1, 0, False)
        for i in range(shards):
            shard = (start + i) % shards
            want = count - len(out.jobs)
            if want <= 0:
                break
            interval, burst = rate_share(rate_interval_ms, rate_burst, shard, shards)
            got = await super().claim(
                shard_name(function, shard), want, lease_ms=lease_ms,
                max_in_flight=cap_share(max_in_flight, shard, shards),
                rate_interval_ms=interval, rate_burst=burst, claim_id=f"{claim_id}-{shard}",
                park_channel=park_channel, park_ttl_ms=park_ttl_ms,
            )  # fmt: skip
            _merge(out, got, shard)
        return out

    async def settle(self, function: str, entries: Sequence[SettleEntry]) -> list[int]:
        by_shard: dict[int, list[tuple[int, SettleEntry]]] = {}
        for i, entry in enumerate(entries):
            token, shard = split_token(entry.token)
            plain = entry if shard == 0 else msgspec.structs.replace(entry, token=token)
            by_shard.setdefault(shard, []).append((i, plain))
        if list(by_shard) == [0]:
            return await super().settle(function, entries)
        codes = [0] * len(entries)
        groups = list(by_shard.items())
        replies = await asyncio.gather(
            *(
                super(ShardedBroker, self).settle(shard_name(function, s), [e for _, e in items])
                for s, items in groups
            )
        )  # at once, each on a connection of its own; a batch sent again is replayed (code 2)
        for (_, items), got in zip(groups, replies, strict=True):
            for (i, _), code in zip(items, got, strict=True):
                codes[i] = code
        return codes

    async def heartbeat(
        self, function: str, held: Sequence[tuple[str, str]], *, lease_ms: int, channel: str = ""
    ) -> tuple[list[str], list[ClaimedJob], list[str]]:
        """Per shard: the leases held there, and the adoption of jobs handed over on any
        shard (so every shard is asked while a ``channel`` is given); and the held ids whose
        cancel was requested."""
        by_shard: dict[int, list[tuple[str, str]]] = {}
        for job_id, token in held:
            tok, shard = split_token(token)
            by_shard.setdefault(shard, []).append((job_id, tok))
        shards = await self.read_shards(function) if channel else 0
        asked = sorted(set(by_shard) | set(range(shards))) if channel else sorted(by_shard)
        replies = await asyncio.gather(
            *(
                super(ShardedBroker, self).heartbeat(
                    shard_name(function, s), by_shard.get(s, []), lease_ms=lease_ms,
                    channel=channel,
                )
                for s in asked
            )
        )  # fmt: skip
        lost: list[str] = []
        adopted: list[ClaimedJob] = []
        cancelling: list[str] = []
        for shard, (gone, got, cancel) in zip(asked, replies, strict=True):
            lost += gone
            adopted += _tagged(got, shard)
            cancelling += cancel
        return lost, adopted, cancelling

    async def history(
        self,
        function: str,
        *,
        state: str | None = None,
        reason: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> HistoryPage:
        """The runs of every shard, merged newest first. A page of a sharded function ends at
        a finish time, not an entry: the next cursor starts at that millisecond again, so a
        run finishing in the same millisecond as the page's last one may be listed twice,
        never skipped (a page whose runs all share one millisecond moves past it)."""
        shards = await self.read_shards(function)

        def one(name: str, at: str | None) -> Awaitable[HistoryPage]:
            return super(ShardedBroker, self).history(
                name, state=state, reason=reason, since_ms=since_ms, until_ms=until_ms,
                cursor=at, limit=limit,
            )  # fmt: skip

        if shards == 1:
            return await one(function, cursor)
        top = None if cursor is None else parse_cursor(cursor)[0]
        start = None if top is None else f"{top}.0"
        pages = await asyncio.gather(*(one(shard_name(function, s), start) for s in range(shards)))
        merged = sorted((j for page in pages for j in page.jobs), key=lambda j: -j.finished_ms)
        jobs = merged[:limit]
        if not (len(merged) > limit or any(page.next_cursor for page in pages)) or not jobs:
            return HistoryPage(jobs, None)
        last = jobs[-1].finished_ms
        return HistoryPage(jobs, f"{last - 1 if last == top else last}.0")

    async def report_progress(self, function: str, job_id: str, token: str, value: bytes) -> bool:
        tok, shard = split_token(token)
        return await super().report_progress(shard_name(function, shard), job_id, tok, value)

    async def mark_executing(self, function: str, job_id: str, token: str) -> bool:
        tok, shard = split_token(token)
        return await super().mark_executing(shard_name(function, shard), job_id, tok)

    async def reclaim(self, function: str, *, max_recoveries: int) -> tuple[int, int]:
        replies = await asyncio.gather(
            *(
                super(ShardedBroker, self).reclaim(
                    shard_name(function, s), max_recoveries=max_recoveries
                )
                for s in range(await self.read_shards(function))
            )
        )
        return sum(r[0] for r in replies), sum(r[1] for r in replies)

    async def report_breaker(self, function: str, state: str) -> None:
        """Into every shard's breaker hash: each shard's backlog read sees the state."""
        for shard in range(await self.read_shards(function)):
            await super().report_breaker(shard_name(function, shard), state)

    async def unpark(self, function: str, channel: str) -> None:
        """Un-park on every shard: shards 1.. first, without a fence, then shard 0, whose
        script sends the one fence the caller waits for."""
        shards = await self.read_shards(function)
        if shards > 1:
            pipe = self.redis.pipeline(transaction=False)
            for shard in range(1, shards):
                k = self.shard_keys(function, shard)
                pipe.zrem(k.parked, channel)
                pipe.hdel(k.park, channel)
            await pipe.execute(raise_on_error=False)
        await super().unpark(function, channel)


def _tagged(jobs: list[ClaimedJob], shard: int) -> list[ClaimedJob]:
    for job in jobs:
        job.token = tag_token(job.token, shard)
    return jobs


def _merge(out: Claim, got: Claim, shard: int) -> None:
    out.jobs += _tagged(got.jobs, shard)
    out.next_due_ms = _earliest(out.next_due_ms, got.next_due_ms)
    out.now_ms = max(out.now_ms, got.now_ms)
    out.is_fleet_limited = out.is_fleet_limited or got.is_fleet_limited
    out.rate_ready_ms = _earliest(out.rate_ready_ms, got.rate_ready_ms)
    out.has_more = out.has_more or got.has_more
    out.dead += got.dead
    out.unreadable += got.unreadable


def _earliest(a: int, b: int) -> int:
    """The earlier of two times where -1 means none."""
    if a < 0 or b < 0:
        return max(a, b)
    return min(a, b)
