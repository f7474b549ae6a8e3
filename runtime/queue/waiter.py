"""Waiting for many jobs' results on one subscription.

``RedisBroker.wait`` blocks a pooled connection per waiter (BLMOVE on the job's done
list), which suits one CLI call but not an HTTP server: sixty callers waiting on sixty
connections starve the workers' claims and settles of the same pool (measured: with a
pool of 32, sixty concurrent invokes of a 0.5 s function all ended in 504). Here every
waiter of the process shares one pub/sub connection: the settle and reclaim scripts
publish the id of a waited-for job (``notify`` flag) on ``{ns}:done`` when it ends, and
the listener resolves that id's futures. A waiter registers before it reads the job, so
an end between the two cannot be missed; a lost subscription wakes every waiter to read
its job again. The subscription is made on the first wait, not at start-up: a runtime
nobody waits on (workers only) does not receive every waited-for job's end for nothing.

The listener runs under a supervisor (``result-waiter``); any Redis error is a lost
subscription (every waiter reads its job again) and a message that is not a job id is
refused (``rejects``, source ``done_channel``) and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from runtime.errors import BrokerError
from runtime.jobs.records import JobRecord
from runtime.observe import rejects
from runtime.observe.supervisor import Supervisor, raise_if_cancelled
from runtime.queue.broker import RedisBroker
from runtime.queue.connection import close_pubsub
from runtime.queue.keys import shard_channel

log = logging.getLogger("runtime.waiter")

TASK = "result-waiter"
MAX_JOB_ID_BYTES = 1000


def parse_done(data: object) -> str | None:
    """The job id a done message carries, or None (refused: counted, logged, skipped)."""
    if not isinstance(data, bytes) or not 0 < len(data) <= MAX_JOB_ID_BYTES:
        rejects.reject("done_channel", f"not a job id: {rejects.sample(data)}")
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        rejects.reject("done_channel", f"not UTF-8: {rejects.sample(data)}")
        return None


class ResultWaiter:
    def __init__(self, broker: RedisBroker, supervisor: Supervisor | None = None) -> None:
        self._broker = broker
        self._supervisor = supervisor or Supervisor("waiter")
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self._is_started = False
        self._is_closed = False
        self.is_subscribed = asyncio.Event()
        # The done channels to follow: the namespace's on one Redis; on a cluster one per
        # function waited on (its shard channel), added by ``wait`` as it meets them.
        self._channels = {broker.done_channel.encode()}
        self._is_sharded = broker.redis.is_cluster
        if self._is_sharded:
            self._channels = set()

    def start(self) -> None:
        """Listen from now on (``wait`` starts it too, on first use)."""
        if not self._is_started and not self._is_closed:
            self._is_started = True
            self._supervisor.spawn(TASK, self._listen)

    async def close(self) -> None:
        self._is_closed = True
        await self._supervisor.stop(timeout_s=2.0, names=[TASK])
        self._wake_all()

    async def wait(self, job_id: str, timeout_s: float) -> JobRecord | None:
        """The job's record once terminal, or as it is when the time is up (None: no such
        job). Holds no Redis connection while waiting."""
        deadline = time.monotonic() + timeout_s
        self.start()  # an end published before it subscribes is caught by its _wake_all
        if self._is_sharded:  # followed from the listener's next poll, which wakes all then
            prefix = (await self._broker.job_keys(job_id)).prefix  # its shard's slot
            self._channels.add(shard_channel(self._broker.done_channel, prefix).encode())
        is_watched = False
        while True:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(job_id, set()).add(future)
            try:
                if not is_watched:  # ask the scripts to publish its end (before reading it)
                    await self._broker.watch(job_id)
                    is_watched = True
                record = await self._broker.job(job_id)
                remaining = deadline - time.monotonic()
                if record is None or record.is_terminal or remaining <= 0:
                    return record
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await future
            finally:
                futures = self._waiting.get(job_id)
                if futures is not None:
                    futures.discard(future)
                    if not futures:
                        del self._waiting[job_id]

    def _resolve(self, job_id: str) -> None:
        for future in self._waiting.get(job_id, ()):
            if not future.done():
                future.set_result(None)

    def _wake_all(self) -> None:
        for job_id in list(self._waiting):
            self._resolve(job_id)

    async def _listen(self) -> None:
        retry_s = 0.1
        poll_s = 0.05 if self._is_sharded else 1.0  # sharded: new channels join on a poll
        try:
            while True:
                pubsub = self._broker.redis.pubsub(ignore_subscribe_messages=True)
                try:
                    subscribed = set(self._channels)
                    if subscribed:
                        await pubsub.subscribe(*subscribed)
                    self.is_subscribed.set()
                    retry_s = 0.1
                    self._wake_all()  # an end may have been published while unsubscribed
                    while True:
                        if added := self._channels - subscribed:
                            await pubsub.subscribe(*added)
                            subscribed |= added
                            self._wake_all()  # ends published before: read them again
                        message = await pubsub.get_message(timeout=poll_s)
                        if message is not None and message["type"] == "message":
                            job_id = parse_done(message["data"])
                            if job_id is not None:
                                self._resolve(job_id)
                except BrokerError as exc:
                    raise_if_cancelled()
                    if self.is_subscribed.is_set():
                        log.warning("result channel lost (%s); reconnecting", exc)
                    self.is_subscribed.clear()
                    self._wake_all()
                    await asyncio.sleep(retry_s)
                    retry_s = min(retry_s * 2, 1.0)
                finally:
                    await close_pubsub(pubsub)
        finally:
            # Stopped or failed: nobody listens, so every waiter reads its job again now.
            self.is_subscribed.clear()
            self._wake_all()
