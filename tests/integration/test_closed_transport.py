"""A write on a connection whose transport is already closed, under uvloop (which serve
runs on): redis-py lets uvloop's RuntimeError through ("unable to perform operation on
<TCPTransport closed=True ...>; the handler is closed"), where asyncio's own loop gives a
ConnectionError. A supervised loop on a fresh cluster client failed with it in a full run
(tests/cluster/test_serve_cluster.py: /readyz 503 naming the task). The runtime's
connections report it as the broken connection it is, so redis-py retries it and the
seam translates it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlparse

import pytest
import redis.exceptions
import uvloop
from redis.asyncio.connection import Connection

from runtime.config.schema import RedisSettings
from runtime.errors import BrokerUnavailable
from runtime.queue.connection import connect
from runtime.queue.resp import is_closed_transport, with_hiredis_packing

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


async def write_on_closed(cls: type[Any], url: str) -> BaseException | None:
    address = urlparse(url)
    connection: Any = cls(host=address.hostname or "127.0.0.1", port=address.port or 6379)
    await connection.connect()
    connection._writer.transport.close()
    try:
        await connection.send_packed_command(b"*1\r\n$4\r\nPING\r\n")
    except BaseException as exc:  # what it raises is the point
        return exc
    return None


def on_uvloop(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


# On 3.12 and later the same write fails earlier, in asyncio's StreamWriter, as the
# ConnectionResetError that redis-py reports as a ConnectionError (seen on 3.12.1).
ONLY_311 = pytest.mark.skipif(
    sys.version_info >= (3, 12), reason="uvloop's RuntimeError reaches redis-py on 3.11 only"
)


@ONLY_311
def test_redis_py_lets_uvloops_runtime_error_through(redis_url: str) -> None:
    error = on_uvloop(lambda: write_on_closed(Connection, redis_url))
    assert isinstance(error, RuntimeError) and is_closed_transport(error)


def test_the_runtimes_connection_reports_a_broken_connection(redis_url: str) -> None:
    error = on_uvloop(lambda: write_on_closed(with_hiredis_packing(Connection), redis_url))
    assert isinstance(error, redis.exceptions.ConnectionError)
    if sys.version_info < (3, 12):
        assert isinstance(error.__cause__, RuntimeError)


def test_a_client_call_on_a_closed_connection_is_retried(redis_url: str) -> None:
    async def main() -> Any:
        client = connect(RedisSettings(timeout_s=2), redis_url)
        try:
            await client.set("k", "v")  # one connection, now in the pool
            pool: Any = client.connection_pool
            for connection in pool._available_connections:
                connection._writer.transport.close()
            return await client.get("k")  # redis-py reconnects and sends it again
        finally:
            await client.aclose()

    assert on_uvloop(main) == b"v"


def test_other_runtime_errors_are_not_taken_for_a_closed_connection() -> None:
    assert not is_closed_transport(RuntimeError("Event loop is closed"))
    assert not is_closed_transport(BrokerUnavailable("the handler is closed", "x"))
