"""The one seam where redis-py's exceptions end (runtime/queue/connection.py), against a
real redis-server: commands, scripts, pipelines, subscriptions and the Client all raise the
runtime's own errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.exceptions

from runtime import Client
from runtime.config.schema import RedisSettings
from runtime.errors import (
    BrokerCommandError,
    BrokerError,
    BrokerUnavailable,
    RedisMemoryFull,
    RuntimeFailure,
)
from runtime.queue import scripts
from runtime.queue.connection import RedisClient, connect
from tests.conftest import free_port

pytestmark = pytest.mark.integration

FAST = RedisSettings(timeout_s=0.5, connect_timeout_s=0.5)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[RedisClient]:
    c = connect(FAST, redis_url)
    yield c
    await c.config_set("maxmemory", 0)
    await c.aclose()


def dead_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


async def test_no_server_is_broker_unavailable_with_the_redis_py_type_named() -> None:
    c = connect(FAST, dead_url())
    try:
        with pytest.raises(BrokerUnavailable) as caught:
            await c.ping()
    finally:
        await c.aclose()
    assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)
    assert caught.value.describe().startswith("ConnectionError: ")
    assert isinstance(caught.value, BrokerError) and isinstance(caught.value, RuntimeFailure)


async def test_an_error_reply_is_a_command_error(client: RedisClient) -> None:
    await client.set("s", "x")
    with pytest.raises(BrokerCommandError) as caught:
        await client.lpush("s", "y")  # WRONGTYPE
    assert "WRONGTYPE" in str(caught.value)
    assert caught.value.cause == "ResponseError"


async def test_out_of_memory_is_redis_memory_full_from_commands_scripts_and_pipelines(
    client: RedisClient,
) -> None:
    await client.config_set("maxmemory-policy", "noeviction")
    await client.config_set("maxmemory", 1)
    with pytest.raises(RedisMemoryFull):
        await client.set("k", "v")
    watch = scripts.register(client, "watch")
    await client.config_set("maxmemory", 0)
    await client.hset("job", "state", "queued")
    await client.config_set("maxmemory", 1)
    with pytest.raises(RedisMemoryFull):
        await watch(keys=["job"])  # first call: NOSCRIPT, loaded and retried, then OOM
    pipe = client.pipeline(transaction=False)
    pipe.set("a", "1")
    with pytest.raises(RedisMemoryFull):
        await pipe.execute()


async def test_a_pipeline_that_returns_errors_returns_translated_values(
    client: RedisClient,
) -> None:
    await client.set("s", "x")
    pipe = client.pipeline(transaction=False)
    pipe.get("s")
    pipe.lpush("s", "y")
    ok, error = await pipe.execute(raise_on_error=False)
    assert ok == b"x"
    assert isinstance(error, BrokerCommandError)


async def test_a_script_is_loaded_on_first_use_not_reported_as_an_error(
    client: RedisClient,
) -> None:
    await client.script_flush()
    watch = scripts.register(client, "watch")
    await client.hset("job", "state", "queued")
    await watch(keys=["job"])
    assert await client.hget("job", "notify") == b"1"


async def test_a_subscription_to_a_dead_server_is_broker_unavailable() -> None:
    c = connect(FAST, dead_url())
    pubsub = c.pubsub()
    try:
        with pytest.raises(BrokerUnavailable):
            await pubsub.subscribe("ch")
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await c.aclose()


async def test_the_client_raises_the_runtimes_errors() -> None:
    async with Client(dead_url(), redis_settings=FAST) as c:
        with pytest.raises(BrokerUnavailable):
            await c.enqueue("hello", {"name": "Ada"})
        with pytest.raises(BrokerUnavailable):
            await c.job("hello.x")
