"""The floor for the latency figures: the smallest Redis worker that does the same job.

    python benchmarks/floor.py REDIS_URL

It pops job ids from the list ``floor:queue`` (BLPOP), sleeps 5 ms like the runtime's
``sleep5ms`` handler and pushes to ``floor:done:<id>``: one hop in, one hop out, no lease, no
retries, no result. ``run.py`` times it with exactly the method it uses for the runtime, so
the difference between the two is what the runtime itself adds; what the floor shows is the
machine, Redis, redis-py and the measurement.
"""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as aioredis

QUEUE = "floor:queue"
DONE = "floor:done:"
HANDLER_S = 0.005


async def main(url: str) -> None:
    popper = aioredis.Redis.from_url(url)  # its connection blocks in BLPOP
    pusher = aioredis.Redis.from_url(url)
    running: set[asyncio.Task[None]] = set()

    async def run(job: bytes) -> None:
        await asyncio.sleep(HANDLER_S)
        await pusher.rpush(DONE.encode() + job, b"1")

    while True:
        popped = await popper.blpop([QUEUE], 0)
        if popped is None:
            continue
        task = asyncio.create_task(run(popped[1]))
        running.add(task)
        task.add_done_callback(running.discard)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
