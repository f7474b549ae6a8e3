"""Property: arbitrary bytes published on any channel a runtime subscribes to (wake, done,
its handoff pattern, deploy notifications) never stop it. After each, the app is still
ready, and a valid job invoked over HTTP runs and its waiter answers.

One app in deploy mode (so the deploy watcher listens too) on a redis-server of its own;
hypothesis publishes on the live subscriptions, example after example.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.config.registry import Registry
from runtime.config.schema import DeploySettings, HttpSettings, RedisSettings, Settings
from runtime.deploy.bundle import (
    BundleFile,
    FunctionEntry,
    build_manifest,
    encode_files,
    encode_manifest,
    sign,
)
from runtime.deploy.store import DeployStore
from runtime.function import FunctionOptions
from runtime.queue.connection import RedisClient, connect
from runtime.queue.keys import DeployKeys, done_channel, wake_channel
from runtime.server.app import build_app
from runtime.server.appkeys import DISPATCHER_KEY
from tests.conftest import RedisServer
from tests.integration.conftest import FAST_WORKER

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NS = "props"
KEY = "channel-properties-signing-key-" + "p" * 8
TOKEN = "props-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SOURCE = b"""from runtime import function


@function(timeout_s=5)
async def double(x: int) -> int:
    return 2 * x
"""

Client = TestClient[web.Request, web.Application]


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-props"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(own_redis: RedisServer) -> AsyncIterator[RedisClient]:
    client = connect(RedisSettings(), own_redis.url)
    await client.flushall()
    yield client
    await client.aclose()


async def _publish_version(redis: RedisClient) -> int:
    store = DeployStore(redis, NS, keep_versions=5)
    files = [BundleFile("handlers.py", SOURCE)]
    entry = FunctionEntry("double", "async", FunctionOptions(timeout_s=5), "handlers.py:4")
    version = await store.next_version()
    manifest = encode_manifest(build_manifest(files, [entry], namespace=NS, version=version))
    await store.publish(version, manifest, sign(KEY, manifest), encode_files(files))
    return version


@pytest.fixture
async def app(tmp_path: Path, own_redis: RedisServer, redis: RedisClient) -> AsyncIterator[Client]:
    settings = Settings(
        namespace=NS,
        redis=RedisSettings(url=own_redis.url, timeout_s=0.5, connect_timeout_s=0.5),
        http=HttpSettings(token=TOKEN),
        worker=FAST_WORKER,
        deploy=DeploySettings(
            signing_key=KEY, dir=str(tmp_path / "deployments"), check_interval_s=0.2
        ),
    )
    client = TestClient(
        TestServer(build_app(settings, Registry(tmp_path / "d", {}), mode="deploy"))
    )
    await client.start_server()
    version = await _publish_version(redis)
    deadline = time.monotonic() + 60
    while True:
        response = await client.get("/readyz")
        body = await response.json()
        if response.status == 200 and body["checks"]["deployment"]["loaded"] == version:
            break
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)
    yield client
    await client.close()


def _channels(client: Client) -> dict[str, str]:
    dispatcher = client.app[DISPATCHER_KEY]
    worker_channel = dispatcher.workers["double"].handoff_channel
    return {
        "wake": wake_channel(NS),
        "done": done_channel(NS),
        "handoff": worker_channel,  # the live worker's own channel
        "handoff_other": worker_channel.rsplit(":", 1)[0] + ":999",  # matched, no worker
        "deploy": DeployKeys(NS).channel,
    }


# Raw bytes, and bytes shaped like a handoff (function, id, Redis ms, envelope), since a
# message of that shape goes further into the dispatcher than random bytes do.
_handoff_like = st.tuples(
    st.sampled_from([b"double", b"nope", b"\xff", b""]),
    st.binary(max_size=40),
    st.one_of(st.integers(-(10**20), 10**20).map(lambda n: str(n).encode()), st.binary()),
    st.binary(max_size=200),
).map(lambda parts: b"\n".join(parts))
messages = st.one_of(st.binary(max_size=2000), _handoff_like)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(channel=st.sampled_from(["wake", "done", "handoff", "handoff_other", "deploy"]),
       data=messages)  # fmt: skip
async def test_any_bytes_on_any_channel_leave_the_runtime_serving(
    app: Client, redis: RedisClient, channel: str, data: bytes
) -> None:
    await redis.publish(_channels(app)[channel], data)
    x = len(data)
    response = await app.post("/v1/functions/double/invoke?timeout_s=10", json=x, headers=AUTH)
    assert response.status == 200, await response.text()
    assert await response.json() == 2 * x
    ready = await app.get("/readyz")
    assert ready.status == 200, await ready.text()
