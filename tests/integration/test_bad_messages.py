"""One bad message on a channel, or a bad deploy pointer, is refused and skipped: the
listener or watcher that read it keeps going (found on main: non-UTF-8 bytes on the wake
channel killed its listener, on the done channel every HTTP wait then ran to its timeout,
and a ``deploy:active`` that is not a number stopped the deploy watcher)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

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
from runtime.observe import rejects
from runtime.queue.keys import DeployKeys
from runtime.queue.waiter import ResultWaiter
from runtime.server.app import build_app
from tests.integration.conftest import FAST_WORKER, MakeHarness

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ECHO = """
    from runtime import function

    @function(timeout_s=5)
    async def echo(x: int) -> int:
        return x
"""
BAD = [b"\xff\xfe\x00", b"\x80" * 300, b"", b"a\nb\nc\n\xff"]


async def until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s}s"
        await asyncio.sleep(0.02)


async def test_garbage_on_the_wake_channel_is_skipped(make_harness: MakeHarness) -> None:
    harness = await make_harness(ECHO, idle_poll_s=30.0)  # only a wake starts a job soon
    dispatcher = harness.dispatcher
    assert dispatcher is not None
    await until(lambda: dispatcher.is_subscribed, 10, "subscribed")
    before = rejects.REJECTED["wake_channel"]
    for data in BAD:
        await harness.redis.publish(harness.broker.wake_channel, data)
    job_id = await harness.client.enqueue("echo", 7)  # its wake comes after the garbage
    assert (await harness.client.wait(job_id, 5)).state == "completed"
    assert dispatcher.is_running and dispatcher.is_subscribed, dispatcher.down
    assert rejects.REJECTED["wake_channel"] - before >= 3


async def test_garbage_on_the_done_channel_does_not_stall_waiters(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(ECHO, start=False)
    waiter = ResultWaiter(harness.broker)
    try:
        waiter.start()
        await asyncio.wait_for(waiter.is_subscribed.wait(), 10)
        before = rejects.REJECTED["done_channel"]
        for data in BAD:
            await harness.redis.publish(harness.broker.done_channel, data)
        job_id = await harness.client.enqueue("echo", 3)
        waiting = asyncio.ensure_future(waiter.wait(job_id, 20))
        await asyncio.sleep(0.2)  # it waits on the subscription, not on a poll
        harness.start()
        started = time.monotonic()
        record = await waiting
        assert record is not None and record.state == "completed"
        assert time.monotonic() - started < 5  # not the full 20 s
        assert rejects.REJECTED["done_channel"] - before >= 3
    finally:
        await waiter.close()


async def test_a_malformed_handoff_message_is_counted_and_skipped(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(ECHO)
    dispatcher = harness.dispatcher
    assert dispatcher is not None
    await until(lambda: dispatcher.is_subscribed, 10, "subscribed")
    channel = dispatcher.workers["echo"].handoff_channel
    before = rejects.REJECTED["handoff_message"]
    for data in (b"\xff", b"echo\nx\nnot-a-number\nenv", b"one line"):
        await harness.redis.publish(channel, data)
    await until(lambda: rejects.REJECTED["handoff_message"] - before >= 3, 5, "refused")
    assert dispatcher.is_running, dispatcher.down
    job_id = await harness.client.enqueue("echo", 5)
    assert (await harness.client.wait(job_id, 5)).state == "completed"


# -- deploy pointers ---------------------------------------------------------------------

KEY = "bad-messages-signing-key-" + "k" * 16
NS = "badmsg"


async def _publish(store: DeployStore, tag: str) -> int:
    source = (
        "from runtime import function\n\n@function\n"
        f"async def tag(x: int) -> str:\n    return {tag!r}\n"
    )
    files = [BundleFile("handlers.py", source.encode())]
    entry = FunctionEntry("tag", "async", FunctionOptions(), "handlers.py:3")
    version = await store.next_version()
    manifest = encode_manifest(build_manifest(files, [entry], namespace=NS, version=version))
    result = await store.publish(version, manifest, sign(KEY, manifest), encode_files(files))
    assert result.is_active(version)
    return version


Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def deploy_app(tmp_path: Path, redis_url: str) -> AsyncIterator[Client]:
    settings = Settings(
        namespace=NS,
        redis=RedisSettings(url=redis_url, timeout_s=0.5, connect_timeout_s=0.5),
        http=HttpSettings(token="t"),
        worker=FAST_WORKER,
        deploy=DeploySettings(
            signing_key=KEY, dir=str(tmp_path / "deployments"), check_interval_s=0.2
        ),
    )
    app = build_app(settings, Registry(tmp_path / "deployments", {}), mode="deploy")
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()


async def _deployment(client: Client) -> tuple[int, dict[str, Any]]:
    response = await client.get("/readyz")
    body = await response.json()
    return response.status, body["checks"].get("deployment", {})


async def _until_http(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s}s"
        await asyncio.sleep(0.05)


async def test_a_bad_deploy_pointer_is_reported_and_the_watcher_keeps_going(
    deploy_app: Client, redis_url: str
) -> None:
    from runtime.queue.connection import connect

    redis = connect(RedisSettings(), redis_url)
    store = DeployStore(redis, NS, keep_versions=5)
    keys = DeployKeys(NS)
    try:
        first = await _publish(store, "one")

        async def loaded(version: int) -> bool:
            status, deployment = await _deployment(deploy_app)
            return status == 200 and deployment.get("loaded") == version

        await _until_http(lambda: loaded(first), 30, "first version loaded")

        # Not a number: reported as why nothing new is applied; the running one serves.
        await redis.set(keys.active, b"\xffnot-a-version")
        await redis.publish(keys.channel, b"\xff")

        async def reports_pointer() -> bool:
            status, deployment = await _deployment(deploy_app)
            return status == 200 and "deploy:active" in str(deployment.get("problem", ""))

        await _until_http(reports_pointer, 10, "the bad pointer reported")
        assert (await deploy_app.post("/v1/functions/tag/invoke", json=1)).status in (200, 401)

        # A version key of the wrong Redis type: that version is refused, nothing stops.
        await redis.set(keys.version(99), b"a string, not a hash")
        await redis.set(keys.active, b"99")

        async def refuses_99() -> bool:
            _, deployment = await _deployment(deploy_app)
            return "99" in deployment.get("refused", {})

        await _until_http(refuses_99, 10, "the wrong-typed version refused")

        second = await _publish(store, "two")  # the watcher is still following
        await _until_http(lambda: loaded(second), 30, "second version loaded")
        _, deployment = await _deployment(deploy_app)
        assert "problem" not in deployment
    finally:
        await redis.aclose()
