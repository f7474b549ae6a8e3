"""Packing commands fast writes, byte for byte, what redis-py's own packer writes: the
enqueue script's command packed by ``EnqueueArgs.resp`` (against ``EnqueueArgs.call``),
and every command of a connection packing with hiredis (``runtime/queue/resp.py``)."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import DataError

from runtime.config.schema import RedisSettings
from runtime.queue.connection import connect
from runtime.queue.enqueue_args import ENQUEUE_KEYS, EnqueueArgs, NewJob
from runtime.queue.keys import FunctionKeys
from runtime.queue.resp import resp, with_hiredis_packing

SHA = "a" * 40
JOBS = [
    NewJob("hello.abc", b"{}"),
    NewJob("hello.abc", b"\x00\r\n$3\r\n" * 40, "high", 1.5, "key-1", own_id=True),
    NewJob("hello.x", b"payload", "low", 0.0004, None),  # rounds to no delay
    NewJob("hello.y", b"", "default", 120.0, "k" * 300),
]


def redis_py_packed(*args: Any) -> bytes:
    """What redis-py would write for the command (its own packer)."""
    return b"".join(Connection().pack_command(*args))


@pytest.mark.parametrize("job", JOBS)
@pytest.mark.parametrize("fresh", [True, False])
def test_resp_is_what_redis_py_packs_from_call(job: NewJob, fresh: bool) -> None:
    fixed = EnqueueArgs(FunctionKeys("rt", "hello"), 86400, "{rt}:wake", "hello", SHA)
    keys, args = fixed.call(job, False, fresh=fresh)
    assert len(keys) == ENQUEUE_KEYS
    expected = redis_py_packed("EVALSHA", SHA, ENQUEUE_KEYS, *keys, *args)
    assert fixed.resp(job, fresh=fresh) == expected


def test_resp_packs_an_array_of_bulk_strings() -> None:
    assert resp(b"SET", b"k", b"") == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
    assert resp(b"GET", b"a\r\nb") == redis_py_packed("GET", b"a\r\nb")


CASES: list[tuple[object, ...]] = [
    ("PING",),
    ("SET", "k", "v"),
    ("SCRIPT LOAD", "return 1"),  # a two-word command name goes as two arguments
    (b"CLIENT SETNAME", b"x"),
    ("EVALSHA", SHA, 2, b"k1", "k2", 0.1 + 0.2, 1e-7, 1e22, -0.0, 2**70, -3, "héllo", b"\x00\r\n"),
    ("SET", "k", memoryview(b"view")),
    ("SET", "k", bytearray(b"array")),
    ("SET", "big", b"x" * 100_000),
]


@pytest.mark.parametrize("args", CASES)
def test_hiredis_packing_writes_what_redis_py_writes(args: tuple[object, ...]) -> None:
    fast = with_hiredis_packing(Connection)()
    assert type(fast).__name__ == "HiredisConnection"
    assert b"".join(fast.pack_command(*args)) == redis_py_packed(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [True, None, object()])
def test_hiredis_packing_refuses_what_redis_py_refuses(bad: object) -> None:
    fast = with_hiredis_packing(Connection)()
    with pytest.raises(DataError):
        Connection().pack_command("SET", "k", bad)  # type: ignore[arg-type]
    with pytest.raises(DataError):
        fast.pack_command("SET", "k", bad)  # type: ignore[arg-type]


def test_every_client_of_connect_packs_with_hiredis() -> None:
    client = connect(RedisSettings(), "redis://127.0.0.1:1/0")
    assert client.connection_pool.connection_class is with_hiredis_packing(Connection)
    tls = connect(RedisSettings(), "rediss://127.0.0.1:1/0")
    assert issubclass(tls.connection_pool.connection_class, SSLConnection)
    assert tls.connection_pool.connection_class.__name__ == "HiredisSSLConnection"


def test_a_cluster_clients_nodes_pack_with_hiredis_too() -> None:
    client: Any = connect(RedisSettings(), "redis+cluster://127.0.0.1:1,127.0.0.1:2")
    fast = with_hiredis_packing(Connection)
    assert client.connection_kwargs["connection_class"] is fast  # nodes found later
    assert {n.connection_class for n in client.nodes_manager.startup_nodes.values()} == {fast}
