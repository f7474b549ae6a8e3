"""A slot migration under a running runtime: calls follow MOVED, and the subscriptions
move to the new owner of the function's slot without a restart."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.integration.conftest import MakeHarness
from tests.redis_cluster import RedisCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ECHO = """
    from runtime import function

    @function()
    async def echo(x: int) -> int:
        return x
"""


async def test_a_slot_migration_is_followed_by_calls_and_subscriptions(
    make_harness: MakeHarness, redis_cluster: RedisCluster
) -> None:
    # The workers poll only every 30 s: a job that starts sooner was started by a wake or
    # a handoff message, so the runtime listens on the slot's new owner.
    h = await make_harness(ECHO, idle_poll_s=30.0)
    assert await h.client.result(await h.client.enqueue("echo", 1), 10) == 1
    key = "{rt:echo}:x"
    before = redis_cluster.owner(key)
    target = next(
        n for n in redis_cluster.live() if n.address in redis_cluster.masters() and n is not before
    )
    await asyncio.to_thread(redis_cluster.move_slot, key, target)
    assert redis_cluster.owner(key).address == target.address
    for x in range(2, 5):
        started = time.monotonic()
        assert await h.client.result(await h.client.enqueue("echo", x), 10) == x
        assert time.monotonic() - started < 5
