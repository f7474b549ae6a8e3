"""``Client.enqueue_many`` against a real redis-server: thousands of jobs pipelined on one
connection, one bad payload failing alone, and a chunk sent again (a lost reply, a flushed
script cache) creating nothing twice."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from runtime.client import CHUNK_JOBS, PIPELINES, Client
from runtime.config.schema import RedisSettings
from runtime.errors import BrokerUnavailable, PayloadError
from runtime.queue import broker as broker_module
from runtime.queue.connection import RedisClient
from runtime.queue.packed import send_packed
from runtime.queue.resp import resp
from tests.integration.conftest import Harness, MakeHarness

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

HELLO = """
    import msgspec
    from runtime import Context, function

    class Greet(msgspec.Struct):
        name: str

    @function(concurrency=64, max_in_flight=512, timeout_s=10)
    async def hello(event: Greet, ctx: Context) -> str:
        return event.name
"""


async def _states(h: Harness, ids: list[str]) -> list[bytes | None]:
    keys = h.broker.keys("hello")
    pipe = h.setup.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(keys.job(job_id), "state")
    return list(await pipe.execute())


async def _jobs_in_redis(h: Harness) -> int:
    return len([k async for k in h.setup.scan_iter(match="{rt:hello}:job:*", count=1000)])


async def test_five_thousand_jobs_are_enqueued_and_completed(make_harness: MakeHarness) -> None:
    h = await make_harness(HELLO)
    results = await h.client.enqueue_many("hello", [{"name": f"n{i}"} for i in range(5000)])
    assert [r.error for r in results] == [None] * 5000
    assert all(r.created for r in results)
    ids = [r.job_id for r in results if r.job_id is not None]
    assert len(set(ids)) == 5000
    async with asyncio.timeout(90):
        while (states := await _states(h, ids)).count(b"completed") < 5000:
            assert b"dead" not in states
            await asyncio.sleep(0.1)
    assert await h.client.result(ids[4321], 5) == "n4321"


async def test_one_bad_payload_fails_alone(make_harness: MakeHarness) -> None:
    h = await make_harness(HELLO, start=False)
    payloads: list[Any] = [{"name": f"n{i}"} for i in range(1000)]
    payloads[500] = {"name": 3}
    results = await h.client.enqueue_many(
        "hello", payloads, job_ids=[f"j{i}" if i != 700 else "bad id!" for i in range(1000)]
    )
    bad = {i: r for i, r in enumerate(results) if r.error is not None}
    assert sorted(bad) == [500, 700]
    assert isinstance(bad[500].error, PayloadError)
    assert r"$.name: expected str, got int" in str(bad[500].error)
    assert "job_id 'bad id!' must be" in str(bad[700].error)
    assert bad[500].job_id is None and not bad[500].created
    assert results[501].job_id == "hello.j501" and results[501].created
    assert await _jobs_in_redis(h) == 998


async def test_a_call_repeated_with_the_same_ids_or_keys_creates_nothing_twice(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(HELLO, start=False)
    payloads = [{"name": f"n{i}"} for i in range(1200)]  # more than two chunks
    ids = [f"j{i}" for i in range(1200)]
    first = await h.client.enqueue_many("hello", payloads, job_ids=ids)
    again = await h.client.enqueue_many("hello", payloads, job_ids=ids)
    assert all(r.created for r in first)
    assert [r.job_id for r in again] == [r.job_id for r in first]
    assert not any(r.created for r in again)
    keys = [f"k{i}" for i in range(1200)]
    by_key = await h.client.enqueue_many("hello", payloads, idempotency_keys=keys)
    by_key_again = await h.client.enqueue_many("hello", payloads, idempotency_keys=keys)
    assert all(r.created for r in by_key)
    assert [r.job_id for r in by_key_again] == [r.job_id for r in by_key]
    assert not any(r.created for r in by_key_again)
    assert await _jobs_in_redis(h) == 2400
    assert await h.setup.llen("{rt:hello}:ready:default") == 2400


async def test_a_chunk_whose_reply_was_lost_is_sent_again_creating_nothing_twice(
    make_harness: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipeline's connection breaks after Redis ran it: its reply is lost
    (BrokerUnavailable). The first send's made ids went fresh (no look for an existing
    job), so the broker sends the chunk again with every job looked for: the second landing
    creates nothing; the ids were this call's, so their jobs are reported created."""
    h = await make_harness(HELLO, start=False)
    lost: list[int] = []

    async def reply_lost(client: RedisClient, commands: Sequence[bytes]) -> list[Any]:
        replies = await send_packed(client, commands)
        if not lost:  # the first chunk landed; its reply never came back
            lost.append(len(replies))
            raise BrokerUnavailable("Connection reset by peer", "ConnectionError")
        return replies

    monkeypatch.setattr(broker_module, "send_packed", reply_lost)
    results = await h.client.enqueue_many(
        "hello", [{"name": f"n{i}"} for i in range(400)], idempotency_keys=[None] * 399 + ["k"]
    )
    assert lost and lost[0] >= 400  # the whole chunk had landed
    assert all(r.created for r in results) and len({r.job_id for r in results}) == 400
    assert await _jobs_in_redis(h) == 400
    assert await h.setup.llen("{rt:hello}:ready:default") == 400


async def test_a_script_cache_flushed_mid_pipeline_loses_and_doubles_nothing(
    make_harness: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The script cache is flushed (a Redis restart, SCRIPT FLUSH) after some of a chunk's
    EVALSHAs: the rest answer NOSCRIPT. The broker loads the script and sends the chunk
    again; the jobs that had landed are not made twice."""
    h = await make_harness(HELLO, start=False)
    flushed: list[bool] = []

    async def flush_midway(client: RedisClient, commands: Sequence[bytes]) -> list[Any]:
        if not flushed:
            flushed.append(True)
            with_flush = [*commands[:150], resp(b"SCRIPT", b"FLUSH"), *commands[150:]]
            replies = await send_packed(client, with_flush)  # after 150 EVALSHAs
            del replies[150]  # the FLUSH's own reply
            return replies
        return await send_packed(client, commands)

    monkeypatch.setattr(broker_module, "send_packed", flush_midway)
    results = await h.client.enqueue_many("hello", [{"name": f"n{i}"} for i in range(300)])
    assert flushed
    assert [r.error for r in results] == [None] * 300
    assert all(r.created for r in results) and len({r.job_id for r in results}) == 300
    assert await _jobs_in_redis(h) == 300
    assert await h.setup.llen("{rt:hello}:ready:default") == 300


async def test_a_chunk_held_past_the_timeout_is_sent_again_creating_nothing_twice(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis holds a chunk's replies longer than ``redis.timeout_s`` (a paused client: a
    fork, a slow disk): the packed first send gives up, drops its connection and the chunk
    goes again, every job looked for. Whatever of the first send ran, nothing is doubled
    and nothing is missing."""
    gave_up: list[BrokerUnavailable] = []

    async def recording(client: RedisClient, commands: Sequence[bytes]) -> list[Any]:
        try:
            return await send_packed(client, commands)
        except BrokerUnavailable as exc:
            gave_up.append(exc)
            raise

    monkeypatch.setattr(broker_module, "send_packed", recording)
    async with (
        Client(redis_url, redis_settings=RedisSettings(timeout_s=0.3)) as client,
        RedisClient.from_url(redis_url) as admin,
    ):
        await client.enqueue_many("hello", [{"n": -1}])  # the script is loaded
        await admin.client_pause(1500, all=True)
        results = await client.enqueue_many("hello", [{"n": i} for i in range(300)])
        assert [r.error for r in results] == [None] * 300
        assert all(r.created for r in results)
        ids = {r.job_id for r in results}
        assert len(ids) == 300
        assert await admin.llen("{rt:hello}:ready:default") == 301
        listed = await admin.lrange("{rt:hello}:ready:default", 0, -1)
        assert ids <= {x.decode() if isinstance(x, bytes) else x for x in listed}
    assert [str(e) for e in gave_up] == ["Redis sent no reply within 0.3s (redis.timeout_s)"]


async def test_one_enqueue_whose_reply_was_lost_is_sent_again_creating_nothing_twice(
    make_harness: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await make_harness(HELLO, start=False)
    real = RedisClient.execute_command
    lost: list[bool] = []

    async def reply_lost(self: RedisClient, *args: Any, **options: Any) -> Any:
        reply = await real(self, *args, **options)
        if args[0] == "EVALSHA" and not lost:
            lost.append(True)
            raise BrokerUnavailable("Connection reset by peer", "ConnectionError")
        return reply

    monkeypatch.setattr(RedisClient, "execute_command", reply_lost)
    job_id = await h.client.enqueue("hello", {"name": "Ada"})
    assert lost
    assert await _jobs_in_redis(h) == 1
    assert await h.setup.lrange("{rt:hello}:ready:default", 0, -1) == [job_id.encode()]


async def test_thousands_of_jobs_hold_at_most_two_connections(redis_url: str) -> None:
    async with Client(redis_url, redis_settings=RedisSettings(timeout_s=5)) as client:
        pool: Any = client._redis.connection_pool
        most = 0
        get = pool.get_connection

        async def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal most
            connection = await get(*args, **kwargs)
            most = max(most, len(pool._holders))
            return connection

        pool.get_connection = counting
        results = await client.enqueue_many("hello", [{"n": i} for i in range(10 * CHUNK_JOBS)])
    assert len({r.job_id for r in results}) == 10 * CHUNK_JOBS
    assert PIPELINES == 2
    assert 1 <= most <= PIPELINES
