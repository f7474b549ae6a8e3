"""No double writes on retry (the retry rule of runtime/queue/connection.py), against a real
redis-server behind a forwarder that loses replies: Redis applies the call, the reply never
comes back, the socket times out; that is when a retried write would land twice."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis

from runtime.config.schema import RedisSettings
from runtime.errors import BrokerUnavailable
from runtime.queue import scripts
from runtime.queue.connection import RedisClient, connect
from tests.conftest import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SETTINGS = RedisSettings(timeout_s=0.3, connect_timeout_s=2.0)


class LostReplies:
    """A TCP forwarder to Redis. After ``lose()``, the replies on every connection open then
    are dropped (Redis still gets and applies the calls); connections opened later work, so
    a retry on a new connection reaches Redis again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._losing: list[list[bool]] = []  # one flag per connection
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    def lose(self) -> None:
        for flag in self._losing:
            flag[0] = True

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        losing = [False]
        self._losing.append(losing)
        for task in (
            asyncio.create_task(self._pipe(reader, up_writer, [False])),
            asyncio.create_task(self._pipe(up_reader, writer, losing)),
        ):
            self._tasks.add(task)

    @staticmethod
    async def _pipe(
        src: asyncio.StreamReader, dst: asyncio.StreamWriter, losing: list[bool]
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            try:
                while data := await src.read(65_536):
                    if not losing[0]:
                        dst.write(data)
                        await dst.drain()
            finally:
                dst.close()


@pytest.fixture
def direct(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client straight to Redis (no forwarder, no retry) to count what landed."""
    client = redis.Redis.from_url(redis_url, socket_timeout=30)
    yield client
    client.close()


@pytest.fixture
async def forwarder(redis_server: RedisServer, redis_url: str) -> AsyncIterator[LostReplies]:
    lost = LostReplies(redis_server.port)
    yield lost
    await lost.close()


@pytest.fixture
async def slow(forwarder: LostReplies) -> AsyncIterator[RedisClient]:
    """The runtime's client, whose connection then loses the replies to what it sends."""
    client = connect(SETTINGS, await forwarder.start())
    await client.ping()  # connected while replies still arrive
    forwarder.lose()
    yield client
    await client.aclose()


def settled(count: Callable[[], int], at_least: int) -> int:
    """The count once what was sent has landed (bounded wait on a condition)."""
    deadline = time.monotonic() + 10
    while count() < at_least and time.monotonic() < deadline:
        time.sleep(0.02)
    return count()


async def outcome(call: Awaitable[Any]) -> BrokerUnavailable | None:
    """The error the caller gets (it decides what to do), or None if the call went through."""
    try:
        await call
    except BrokerUnavailable as exc:
        return exc
    return None


async def test_a_pipeline_of_pushes_that_times_out_is_not_sent_again(
    slow: RedisClient, direct: redis.Redis
) -> None:
    pipe = slow.pipeline(transaction=False)
    for i in range(10):
        pipe.rpush("dlq", *(f"x{i}-{j}" for j in range(100)))
    error = await outcome(pipe.execute())
    assert settled(lambda: int(direct.llen("dlq")), 1000) == 1000
    assert error is not None


async def test_a_transaction_with_a_counter_that_times_out_is_not_sent_again(
    slow: RedisClient, direct: redis.Redis
) -> None:
    pipe = slow.pipeline(transaction=True)
    pipe.hincrby("stats", "n", 1)
    pipe.expire("stats", 60)
    error = await outcome(pipe.execute())
    assert settled(lambda: int(direct.hget("stats", "n") or 0), 1) == 1
    assert error is not None


@pytest.mark.parametrize(
    ("command", "count"),
    [
        (("RPUSH", "list", "a"), lambda r: int(r.llen("list"))),
        (("LPUSH", "list", "a"), lambda r: int(r.llen("list"))),
        (("INCR", "seq"), lambda r: int(r.get("seq") or 0)),
    ],
)
async def test_a_single_counting_command_that_times_out_is_not_sent_again(
    slow: RedisClient,
    direct: redis.Redis,
    command: tuple[str, ...],
    count: Callable[[redis.Redis], int],
) -> None:
    error = await outcome(slow.execute_command(*command))
    assert settled(lambda: count(direct), 1) == 1
    assert error is not None


async def test_an_idempotent_script_is_still_retried_on_a_new_connection(
    slow: RedisClient, direct: redis.Redis
) -> None:
    """The rule exempts only what may not land twice: scripts keep redis-py's retry."""
    direct.hset("job", "state", "queued")
    watch = scripts.register(slow, "watch")
    await watch(keys=["job"])  # the first reply is lost; the retry's is not
    assert direct.hget("job", "notify") == b"1"
