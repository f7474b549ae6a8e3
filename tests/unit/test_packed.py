"""The enqueue script's command packed by ``EnqueueArgs.resp`` is, byte for byte, what
redis-py packs from ``EnqueueArgs.call`` (the pipeline path), for every kind of job."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import Connection

from runtime.queue.enqueue_args import ENQUEUE_KEYS, EnqueueArgs, NewJob
from runtime.queue.keys import FunctionKeys
from runtime.queue.packed import resp

SHA = "a" * 40
JOBS = [
    NewJob("hello.abc", b"{}"),
    NewJob("hello.abc", b"\x00\r\n$3\r\n" * 40, "high", 1.5, "key-1", own_id=True),
    NewJob("hello.x", b"payload", "low", 0.0004, None),  # rounds to no delay
    NewJob("hello.y", b"", "default", 120.0, "k" * 300),
]


def redis_py_packed(*args: bytes | str | int) -> bytes:
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
