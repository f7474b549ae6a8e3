"""The load generator: jobs with unique ids, enqueued at a steady pace, retried until Redis
acknowledges them.

A job is *accepted* once an enqueue call returned: Redis has acknowledged it, and from then
on the runtime owes it a terminal state. An enqueue that fails is retried with the same id,
as a careful caller would: enqueue is idempotent by job id, so a retry whose first try did
reach Redis (reply lost) must not make a second job. A refusal for want of memory (Redis
OOM, scenario 12) is retried the same way: nothing was written.
"""

from __future__ import annotations

import asyncio
import random
import time

from runtime.client import Client
from runtime.config.schema import RedisSettings
from runtime.errors import BrokerUnavailable, RedisMemoryFull

CLIENT_SETTINGS = RedisSettings(timeout_s=0.5, connect_timeout_s=0.5)
GIVE_UP_S = 45.0  # per job: longer than any outage a scenario makes


class Load:
    """``count`` jobs of ``function`` over ``over_s`` seconds, ids ``<prefix>-00000``…"""

    def __init__(
        self,
        redis_url: str,
        prefix: str,
        count: int,
        over_s: float,
        *,
        seconds: tuple[float, float] = (0.01, 0.05),
        rng: random.Random,
        function: str = "work",
        settings: RedisSettings = CLIENT_SETTINGS,
    ) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.count = count
        self.over_s = over_s
        self.function = function
        self.settings = settings
        self._durations = [round(rng.uniform(*seconds), 4) for _ in range(count)]
        self.accepted: dict[str, float] = {}  # job id -> unix time its enqueue returned
        self.unacknowledged: list[str] = []  # gave up: may or may not exist in Redis
        self.retries = 0  # enqueues that failed after redis-py's own retries
        self.replayed = 0  # first enqueues of an id answered "exists": a retried write
        self.task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self._run(), name=f"load:{self.prefix}")
        return self.task

    async def wait(self) -> None:
        if self.task is not None:
            await self.task

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self) -> None:
        async with Client(self.redis_url, redis_settings=self.settings) as client:
            began = time.monotonic()
            step = self.over_s / max(1, self.count)
            for i, seconds in enumerate(self._durations):
                delay = began + i * step - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._enqueue(client, f"{self.prefix}-{i:05d}", seconds)

    async def _enqueue(self, client: Client, suffix: str, seconds: float) -> None:
        job_id = f"{self.function}.{suffix}"
        deadline = time.monotonic() + GIVE_UP_S
        backoff_s = 0.05
        while True:
            try:
                _, created = await client.producer.enqueue(self.function, seconds, job_id=suffix)
            except (BrokerUnavailable, RedisMemoryFull, TimeoutError):
                if time.monotonic() > deadline:
                    self.unacknowledged.append(job_id)
                    return
                self.retries += 1
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 0.5)
                continue
            self.accepted[job_id] = time.time()
            # Each id is enqueued once: "already there" means a try whose reply was lost
            # had reached Redis, and the retry was recognised instead of applied twice.
            self.replayed += not created
            return
