"""In-process runtime harness: handler source → registry → broker → dispatcher → client."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from runtime.client import Client
from runtime.config.cluster_url import is_cluster_url, parse_cluster_url
from runtime.config.registry import Registry, load_registry
from runtime.config.schema import RedisSettings, Settings, WorkerSettings
from runtime.execution.dispatcher import Dispatcher
from runtime.queue.connection import connect
from runtime.queue.sharded import ShardedBroker

FAST_WORKER = WorkerSettings(
    lease_s=1.0,
    heartbeat_s=0.25,
    reclaim_interval_s=0.3,
    idle_poll_s=0.5,
    shutdown_grace_s=2.0,
    keep_result_s=600,
)


def setup_client(url: str) -> Any:
    """A plain redis-py client for a test's own writes (a cluster client for a
    ``redis+cluster://`` URL: tests/cluster runs these tests on a cluster too)."""
    if is_cluster_url(url):
        host, port = parse_cluster_url(url).seeds[0]
        return RedisCluster(host=host, port=port, socket_timeout=60)
    return aioredis.Redis.from_url(url, socket_timeout=60)


class Harness:
    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.redis = connect(settings.redis, settings.redis.url)
        self.broker = ShardedBroker(
            self.redis, settings.namespace, keep_result_s=settings.worker.keep_result_s, block_s=0.4
        )
        self.client = Client.from_settings(settings, settings.redis.url, registry)
        # For a test's own set-up writes: no retry that could send a push twice, and a
        # timeout long enough for a loaded machine (the runtime's client has 0.5 s).
        self.setup = setup_client(settings.redis.url)
        self.dispatcher: Dispatcher | None = None

    def start(self) -> Dispatcher:
        self.dispatcher = Dispatcher(self.registry, self.broker, self.settings)
        self.dispatcher.start()
        return self.dispatcher

    async def stop(self, grace_s: float | None = None) -> None:
        if self.dispatcher is not None:
            grace = self.settings.worker.shutdown_grace_s if grace_s is None else grace_s
            await self.dispatcher.drain(grace)
            self.dispatcher = None

    async def close(self) -> None:
        await self.stop()
        await self.client.close()
        await self.redis.aclose()
        await self.setup.aclose()


MakeHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_harness(tmp_path: Path, redis_url: str) -> AsyncIterator[MakeHarness]:
    made: list[Harness] = []

    async def make(
        source: str,
        *,
        start: bool = True,
        params: dict[str, dict[str, Any]] | None = None,
        functions: dict[str, dict[str, Any]] | None = None,
        **worker: Any,
    ) -> Harness:
        folder = tmp_path / f"functions{len(made)}"
        folder.mkdir()
        (folder / "handlers.py").write_text(textwrap.dedent(source))
        settings = Settings(
            redis=RedisSettings(url=redis_url, timeout_s=0.5),
            worker=msgspec.structs.replace(FAST_WORKER, **worker),
            params=params or {},
            functions=functions or {},
        )
        harness = Harness(settings, load_registry(folder, settings.functions))
        made.append(harness)
        if start:
            harness.start()
        return harness

    yield make
    for harness in made:
        await harness.close()
