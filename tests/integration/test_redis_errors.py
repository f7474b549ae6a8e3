"""A worker's loops outlive any Redis error, not only an unreachable Redis: during an
out-of-memory episode (``maxmemory`` reached under ``noeviction``: writes that may grow
memory refused with ``OOM command not allowed``) the heartbeat goes on renewing its leases
(extend.lua runs with ``allow-oom``: moving a deadline grows nothing), so a long job is not
reclaimed, runs once and is never charged a crash, however long the episode.
Found: the heartbeat loop died on the first OOM reply, and every job longer than the lease
was reclaimed and run again; then, with the loop fixed, an episode longer than the lease
still made a job run twice (chaos scenario 12): Redis refused the heartbeat (its first write
is a ZADD) but not the reclaim or the claim (whose first writes, ZREM and LPOP, free
memory), so the lease lapsed under a running job that was then claimed again."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aioredis
import redis.exceptions

from runtime.config.registry import load_registry
from runtime.config.schema import RedisSettings, Settings
from tests.conftest import RedisServer
from tests.integration.conftest import FAST_WORKER, Harness

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SOURCE = """
    import asyncio
    from runtime import function

    RUNS: list[str] = []

    @function(concurrency=2, timeout_s=60)
    async def long(seconds: float) -> int:
        RUNS.append("run")
        await asyncio.sleep(seconds)
        return len(RUNS)
"""

LEASE_S = 3.0


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[tuple[RedisServer, aioredis.Redis]]:
    """A redis-server of this test's own: its memory limit must not touch other tests."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    raw = aioredis.Redis.from_url(server.url)
    try:
        yield server, raw
    finally:
        await raw.aclose()
        server.stop()


async def until(predicate: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


async def fill_memory(raw: aioredis.Redis) -> int:
    """Write 2 MB, then cap memory under what is used: out of memory, every write refused."""
    keys = 20
    for n in range(keys):
        await raw.set(f"filler:{n}", b"x" * 100_000)
    used = int((await raw.info("memory"))["used_memory"])
    await raw.config_set("maxmemory-policy", "noeviction")
    await raw.config_set("maxmemory", used - 500_000)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        await raw.set("probe", b"x")
    return keys


async def free_memory(raw: aioredis.Redis, keys: int) -> None:
    await raw.delete(*(f"filler:{n}" for n in range(keys)))
    await raw.config_set("maxmemory", 0)


@pytest.mark.parametrize("oom_s", [1.5, 1.5 * LEASE_S], ids=["shorter", "longer than the lease"])
async def test_an_out_of_memory_episode_does_not_reclaim_a_long_job(
    own_redis: tuple[RedisServer, aioredis.Redis], tmp_path: Path, oom_s: float
) -> None:
    server, raw = own_redis
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "handlers.py").write_text(textwrap.dedent(SOURCE))
    settings = Settings(
        redis=RedisSettings(url=server.url, timeout_s=0.5),
        worker=msgspec.structs.replace(FAST_WORKER, lease_s=LEASE_S),
    )
    h = Harness(settings, load_registry(folder, settings.functions))
    runs: list[str] = h.registry.get("long").handler.__globals__["RUNS"]
    try:
        dispatcher = h.start()
        worker = dispatcher.workers["long"]
        job_id = await h.client.enqueue("long", oom_s + LEASE_S)  # outlives lease and OOM
        await until(lambda: _true(runs == ["run"]), 10, "the job to start")
        leased = h.broker.keys("long").leased

        keys = await fill_memory(raw)
        try:
            before = await raw.zscore(leased, job_id)
            # A heartbeat renews the lease while memory is full.
            await until(
                lambda: _moved(raw, leased, job_id, before), LEASE_S, "a renewal during the OOM"
            )
            await asyncio.sleep(oom_s)  # every heartbeat meets the OOM while it lasts
        finally:
            await free_memory(raw, keys)

        record = await h.client.wait(job_id, 20)
        assert (record.state, record.recoveries, record.attempts) == ("completed", 0, 0)
        assert runs == ["run"]  # ran once: never reclaimed
        assert worker.counters.leases_lost == 0
        assert worker.counters.stale_acks == 0
        # After the episode, the worker still runs new jobs.
        assert await h.client.result(await h.client.enqueue("long", 0.01), 15) == 2
    finally:
        await h.close()


async def _true(value: bool) -> bool:
    return value


async def _moved(raw: aioredis.Redis, key: str, member: str, before: float | None) -> bool:
    score = await raw.zscore(key, member)
    return before is not None and score is not None and score > before
