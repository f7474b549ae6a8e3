"""The Redis broker: every job state transition, each one atomic Lua script.

    enqueue ─> queued|delayed ─claim─> running ─settle C─> completed (kept keep_result_s)
                     ^                    │ ├─settle R─> delayed (backoff) ─claim promotes─┐
                     └────────────────────┘ ├─settle D─> dead (in the DLQ)                 │
                       reclaim (lease expired, recoveries+1) / settle L (release) / K      │
                     ^─────────────────────────────────────────────────────────────────────┘

Every script is safe to run twice, because redis-py retries a command whose connection broke
and the first run may already have happened (ARCHITECTURE invariant 4): enqueue is keyed by
job id and idempotency key, claim by a claim id, settle and extend by fencing tokens.

Every script checks the records it touches before it writes (``lua/_records.lua``) and
dead-letters a corrupt one as ``corrupt_record``; the replies are parsed totally here too
(``records.as_job``): an element that does not parse is dropped, counted and logged (at
most once per ``LOG_EVERY_S``), never raised out of a claim or a heartbeat.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import msgspec
from redis.exceptions import NoScriptError

from runtime.errors import BrokerError, BrokerUnavailable
from runtime.function import Priority
from runtime.jobs.records import Claim, ClaimedJob, Invalid, as_int, as_job, as_text
from runtime.jobs.settle import SettleEntry, settle_argv
from runtime.jobs.suspects import suspect_threshold
from runtime.queue import scripts
from runtime.queue.connection import RedisClient, once
from runtime.queue.control import JobControl
from runtime.queue.enqueue_args import ENQUEUE_KEYS, EnqueueArgs, NewJob
from runtime.queue.keys import done_channel, wake_channel
from runtime.queue.packed import send_packed

CLAIM_RECORD_TTL_S = 60
PROMOTE_LIMIT = 1000
RECLAIM_LIMIT = 1000
LOG_EVERY_S = 10.0

log = logging.getLogger("runtime.broker")


def new_claim_id() -> str:
    return os.urandom(8).hex()


class _Unreadable:
    """Replies this process could not parse: counted, logged at most every LOG_EVERY_S."""

    def __init__(self) -> None:
        self.count = 0
        self._logged_at = -LOG_EVERY_S

    def note(self, function: str, what: str, invalid: Invalid) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.error(
                "%s: skipped an unreadable %s from Redis (%s); %d so far in this process",
                function,
                what,
                invalid.why,
                self.count,
            )


def _enqueued(res: Any) -> tuple[str, bool]:
    """(id, created) from enqueue.lua's reply: the id is ours, or the one an idempotency
    key names (read from Redis: parsed)."""
    parsed = as_text(res[0])
    if isinstance(parsed, Invalid):
        return bytes(res[0]).decode("utf-8", "replace"), res[1] == 1
    return parsed, res[1] == 1


def _ids(unreadable: _Unreadable, function: str, replies: Sequence[Any], what: str) -> list[str]:
    """The job ids of a script's reply; one that does not read is noted and left out."""
    ids = []
    for raw in replies:
        parsed = as_text(raw)
        if isinstance(parsed, Invalid):
            unreadable.note(function, what, parsed)
        else:
            ids.append(parsed)
    return ids


def _is_noscript(reply: object) -> bool:
    return isinstance(reply, BrokerError) and isinstance(reply.__cause__, NoScriptError)


def _int(raw: object, default: int) -> int:
    value = as_int(raw, low=-1)
    return default if isinstance(value, Invalid) else value


class RedisBroker(JobControl):
    """Job transitions for a namespace on one Redis (or Redis Cluster), on top of the
    reads of ``JobQueries`` and the cancel, progress and history of ``JobControl``."""

    def __init__(
        self, client: RedisClient, namespace: str, *, keep_result_s: int, block_s: float
    ) -> None:
        super().__init__(client, namespace, keep_result_s=keep_result_s, block_s=block_s)
        self.wake_channel = wake_channel(namespace)
        self.done_channel = done_channel(namespace)
        self._enqueue = scripts.register(client, "enqueue")
        self._claim = scripts.register(client, "claim")
        self._settle = scripts.register(client, "settle")
        self._extend = scripts.register(client, "extend")
        self._reclaim = scripts.register(client, "reclaim")
        self._exec = scripts.register(client, "mark_exec")
        self._unpark = scripts.register(client, "unpark")
        self.unreadable = _Unreadable()
        self._enqueue_fixed: dict[str, EnqueueArgs] = {}

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
        """Create the job unless it (or its idempotency key) exists. Returns (id, created).
        ``own_id``: the caller chose ``job_id`` (see NewJob)."""
        item = NewJob(job_id, envelope, priority, delay_s, idempotency_key, own_id)
        fixed = self._fixed(function)
        if not own_id:
            try:
                with once():  # fresh: sent one time (lua/enqueue.lua, "Fresh")
                    keys, args = fixed.call(item, notify, fresh=True)
                    return _enqueued(await self._enqueue(keys=keys, args=args))
            except BrokerUnavailable:
                pass  # its outcome is unknown: sent again below, as a job that may exist
        keys, args = fixed.call(item, notify, fresh=False)
        return _enqueued(await self._enqueue(keys=keys, args=args))

    async def enqueue_many(
        self, function: str, jobs: Sequence[NewJob]
    ) -> list[tuple[str, bool] | BrokerError]:
        """Create each job unless it (or its idempotency key) exists: one pipeline of the
        enqueue script (EVALSHA, not a transaction), one connection, one round trip.

        Per job (id, created), or the error reply Redis gave that job (e.g. RedisMemoryFull);
        the others still go in. The first send goes once, its made ids fresh (no look for an
        existing job: lua/enqueue.lua); if its outcome is unknown (a broken connection), the
        pipeline goes again with every job looked for first, with redis-py's retries: safe,
        because every job is keyed by its id (made before this call) and its idempotency
        key, so a second landing creates nothing and answers (id, 0). A connection that
        stays broken raises BrokerUnavailable."""
        if not jobs:
            return []
        try:
            with once():
                replies = await self._enqueue_pipeline(function, jobs, fresh=True)
        except BrokerUnavailable:
            replies = await self._enqueue_pipeline(function, jobs, fresh=False)
        if any(_is_noscript(r) for r in replies):
            # The script cache was flushed between the pipeline's SCRIPT EXISTS and its
            # EVALSHAs (a restart, SCRIPT FLUSH): once more, loading it first. Safe: see above.
            replies = await self._enqueue_pipeline(function, jobs, fresh=False)
        return [r if isinstance(r, BrokerError) else _enqueued(r) for r in replies]

    async def _enqueue_pipeline(
        self, function: str, jobs: Sequence[NewJob], *, fresh: bool
    ) -> list[Any]:
        fixed = self._fixed(function)
        if fresh and not self.redis.is_cluster:
            # Packed once per function (runtime/queue/packed.py), without the pipeline's
            # SCRIPT EXISTS: a NOSCRIPT reply sends the jobs again (enqueue_many).
            return await send_packed(self.redis, [fixed.resp(job, fresh=True) for job in jobs])
        pipe = self.redis.pipeline(transaction=False)
        # loaded (SCRIPT EXISTS, LOAD) before the EVALSHAs, as AsyncScript.__call__ does
        pipe.scripts.add(self._enqueue)  # type: ignore[arg-type]
        sha, n_keys = self._enqueue.sha, ENQUEUE_KEYS
        for job in jobs:
            keys, args = fixed.call(job, False, fresh=fresh)
            pipe.execute_command("EVALSHA", sha, n_keys, *keys, *args)  # queued, not sent
        return await pipe.execute(raise_on_error=False)

    def _fixed(self, function: str) -> EnqueueArgs:
        """What enqueue.lua's arguments share for ``function``, encoded once (redis-py's
        packing of str and int arguments was most of enqueue_many's time)."""
        fixed = self._enqueue_fixed.get(function)
        if fixed is None:
            fixed = self._enqueue_fixed[function] = EnqueueArgs(
                self.keys(function),
                self.keep_result_s,
                self.wake_channel,
                function,
                self._enqueue.sha,
            )
        return fixed

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
        """Lease up to ``count`` jobs. A claim whose reply was lost is replayed by calling
        again with the same ``claim_id`` (redis-py's own retries do; a caller whose call
        failed should too): the replay returns the jobs already leased, never new ones.

        With a ``park_channel``, a claim that leaves room parks the caller there for
        ``park_ttl_ms``: enqueue hands it new jobs directly (lua/claim.lua, enqueue.lua)."""
        k = self.keys(function)
        claim_id = claim_id or new_claim_id()
        res = await self._claim(
            keys=k.claim_keys(claim_id),
            args=[
                k.prefix,
                count,
                lease_ms,
                max_in_flight,
                CLAIM_RECORD_TTL_S,
                PROMOTE_LIMIT,
                f"{rate_interval_ms:.6f}",
                rate_burst,
                park_channel,
                park_ttl_ms,
                self.done_channel,
                self.keep_result_s,
            ],
        )
        jobs = self._jobs(function, res[0], "claimed job")
        more = len(res) > 5 and res[5] == 1
        dead = _int(res[6], 0) if len(res) > 6 else 0
        return Claim(
            jobs,
            _int(res[1], -1),
            _int(res[2], 0),
            res[3] == 1,
            _int(res[4], -1),
            has_more=more,
            dead=dead,
            unreadable=len(res[0]) - len(jobs),
        )

    def _jobs(self, function: str, replies: Sequence[Any], what: str) -> list[ClaimedJob]:
        jobs = []
        for reply in replies:
            job = as_job(reply)
            if isinstance(job, Invalid):
                self.unreadable.note(function, what, job)
            else:
                jobs.append(job)
        return jobs

    async def unpark(self, function: str, channel: str) -> None:
        """Stop handoffs of ``function`` to ``channel``; an empty message follows on it."""
        k = self.keys(function)
        await self._unpark(keys=[k.parked, k.park], args=[channel])

    async def settle(self, function: str, entries: Sequence[SettleEntry]) -> list[int]:
        """Apply outcomes; one code per entry: 1 applied, 2 replayed, 0 fenced (stale), 3 its
        record was corrupt: dead-lettered ``corrupt_record`` instead (lua/settle.lua)."""
        k = self.keys(function)
        args: list[Any] = [
            k.prefix,
            self.keep_result_s,
            self.wake_channel,
            function,
            self.done_channel,
        ]
        args += settle_argv(entries)
        res = await self._settle(
            keys=[k.leased, k.delayed, k.dlq, k.stats, *k.lanes, k.results, k.history],
            args=args,
        )
        return [_int(c, 0) for c in res]

    async def extend(
        self, function: str, held: Sequence[tuple[str, str]], *, lease_ms: int
    ) -> list[str]:
        """Renew leases; returns the ids this worker no longer holds."""
        if not held:
            return []
        lost, _, _ = await self.heartbeat(function, held, lease_ms=lease_ms)
        return lost

    async def heartbeat(
        self, function: str, held: Sequence[tuple[str, str]], *, lease_ms: int, channel: str = ""
    ) -> tuple[list[str], list[ClaimedJob], list[str]]:
        """Renew leases, and adopt the jobs handed to ``channel`` that are not in ``held``
        (their message was lost). Returns (ids no longer held, adopted jobs, held ids whose
        cancel was requested)."""
        k = self.keys(function)
        args: list[Any] = [k.prefix, lease_ms, channel]
        for job_id, token in held:
            args += [job_id, token]
        res = await self._extend(keys=[k.leased], args=args)
        lost = _ids(self.unreadable, function, res[0], "lost id")
        cancelling = _ids(self.unreadable, function, res[2], "cancel") if len(res) > 2 else []
        return lost, self._jobs(function, res[1], "adopted job"), cancelling

    async def reclaim(self, function: str, *, max_recoveries: int) -> tuple[int, int]:
        """Requeue (or dead-letter) jobs whose lease expired. Returns (requeued, dead)."""
        k = self.keys(function)
        res = await self._reclaim(
            keys=[k.leased, k.dlq, k.stats, *k.lanes, k.results, k.history],
            args=[
                k.prefix,
                max_recoveries,
                RECLAIM_LIMIT,
                self.keep_result_s,
                self.wake_channel,
                function,
                suspect_threshold(max_recoveries),
                self.done_channel,
            ],
        )
        return _int(res[0], 0), _int(res[1], 0)

    async def report_breaker(self, function: str, state: str) -> None:
        """Record this process's breaker state for `runtime stats` (kept a day)."""
        key = self.keys(function).breaker
        field = f"{socket.gethostname()}:{os.getpid()}"
        value = msgspec.json.encode({"state": state, "at": time.time()})
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, field, value)
        pipe.expire(key, 86_400)
        await pipe.execute()

    async def mark_executing(self, function: str, job_id: str, token: str) -> bool:
        """Record that a suspect job really started (see quarantine.py); False: lease lost."""
        res = await self._exec(keys=[self.keys(function).job(job_id)], args=[token])
        return bool(res)
