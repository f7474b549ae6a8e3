"""The shared result subscription (runtime/queue/waiter.py) against a real redis-server."""

from __future__ import annotations

import time

import pytest

from runtime.queue.waiter import ResultWaiter
from tests.integration.conftest import MakeHarness

pytestmark = pytest.mark.integration

SOURCE = """
    import asyncio
    from runtime import function

    @function(concurrency=4)
    async def echo(x: int) -> int:
        return x

    @function(concurrency=4)
    async def nap(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds
"""


async def test_the_result_waiter_subscribes_on_its_first_wait(make_harness: MakeHarness) -> None:
    """A runtime nobody waits on does not receive every waited-for job's end; the first
    waiter subscribes, and an end published before that is still seen at once."""
    h = await make_harness(SOURCE)
    waiter = ResultWaiter(h.broker)
    channel = h.broker.done_channel
    try:
        job_id = await h.client.enqueue("echo", 1, notify=True)
        await h.client.wait(job_id, 5)  # ended, its end published to nobody
        assert (await h.redis.pubsub_numsub(channel))[0][1] == 0
        started = time.monotonic()
        record = await waiter.wait(job_id, 5)
        assert record is not None and record.state == "completed"
        second = await h.client.enqueue("nap", 0.3)
        record = await waiter.wait(second, 5)  # woken through the subscription, not polling
        assert record is not None and record.state == "completed"
        assert time.monotonic() - started < 2
        assert (await h.redis.pubsub_numsub(channel))[0][1] == 1
    finally:
        await waiter.close()
