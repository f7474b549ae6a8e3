"""A worker's loops outlive any Redis error, not only an unreachable Redis: during an
out-of-memory episode (``maxmemory`` reached under ``noeviction``: every write refused with
``OOM command not allowed``) the heartbeat keeps trying, and renews its leases as soon as
memory is freed, so a long job is not reclaimed, runs once and is never charged a crash.
Found: the heartbeat loop died on the first OOM reply, and every job longer than the lease
was reclaimed and run again."""

from __future__ import annotations

import asyncio
import logging
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
OOM_S = 1.5  # longer than several heartbeats, shorter than the lease


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


async def test_an_out_of_memory_episode_does_not_reclaim_a_long_job(
    own_redis: tuple[RedisServer, aioredis.Redis],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
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
        job_id = await h.client.enqueue("long", 2 * LEASE_S)  # longer than the lease
        await until(lambda: _true(runs == ["run"]), 10, "the job to start")

        with caplog.at_level(logging.WARNING, logger="runtime.worker"):
            keys = await fill_memory(raw)
            oom_at = time.monotonic()
            # Several heartbeats meet the OOM while it lasts.
            await asyncio.sleep(OOM_S)
            await free_memory(raw, keys)
            assert time.monotonic() - oom_at < LEASE_S - 0.5  # the lease outlived it

        record = await h.client.wait(job_id, 20)
        assert (record.state, record.recoveries, record.attempts) == ("completed", 0, 0)
        assert runs == ["run"]  # ran once: never reclaimed
        assert worker.counters.leases_lost == 0
        assert worker.counters.stale_acks == 0
        assert any("Redis out of memory during heartbeat" in r.message for r in caplog.records)
        # After the episode, the worker still runs new jobs.
        assert await h.client.result(await h.client.enqueue("long", 0.01), 15) == 2
    finally:
        await h.close()


async def _true(value: bool) -> bool:
    return value
