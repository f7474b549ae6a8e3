"""One Client shared by many concurrent producers, against a real redis-server: the pool
hands connections out first come, first served, and a caller that cannot get one in time
gets the runtime's own error naming ``redis.max_connections``."""

from __future__ import annotations

import asyncio

import pytest
import redis

from runtime import Client
from runtime.config.schema import RedisSettings
from runtime.errors import BrokerUnavailable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_a_thousand_concurrent_producers_on_one_client_all_succeed(redis_url: str) -> None:
    """Found: a waiter could lose the race for a freed connection to newcomers again and
    again until its wait ran out (``No connection available.`` on a healthy Redis). A short
    socket timeout makes the old pool's wait short, so the unfairness shows at once."""
    settings = RedisSettings(timeout_s=0.5)  # the default pool size (64)
    async with Client(redis_url, redis_settings=settings) as client:

        async def produce(p: int) -> list[str]:
            return [await client.enqueue("hello", {"n": i}, job_id=f"p{p}-{i}") for i in range(20)]

        batches = await asyncio.gather(*(produce(p) for p in range(1000)))
    assert len({job for batch in batches for job in batch}) == 20_000
    check = redis.Redis.from_url(redis_url)
    try:
        assert check.llen("{rt:hello}:ready:default") == 20_000
    finally:
        check.close()


async def test_a_caller_that_gets_no_connection_in_time_is_told_which_setting_to_raise(
    redis_url: str,
) -> None:
    tiny = RedisSettings(max_connections=2, timeout_s=0.5, connect_timeout_s=0.5)
    admin = redis.Redis.from_url(redis_url)
    async with Client(redis_url, redis_settings=tiny) as client:
        await client.enqueue("hello", {"n": 0})  # connected before Redis stops answering
        admin.execute_command("CLIENT", "PAUSE", "3000", "ALL")
        try:
            outcomes = await asyncio.gather(
                *(client.enqueue("hello", {"n": i}) for i in range(6)), return_exceptions=True
            )
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
            admin.close()
    starved = [
        o for o in outcomes if isinstance(o, BrokerUnavailable) and "max_connections" in str(o)
    ]
    assert starved, outcomes
    assert all(isinstance(o, BrokerUnavailable | str) for o in outcomes), outcomes
    assert "redis.max_connections" in str(starved[0])
