"""Redis answering errors (OOM, a wrong key type, garbage on a channel) costs one request or
one message, never a loop: every part of a real app recovers by itself within seconds of
Redis recovering, against a real redis-server with ``maxmemory`` and ``noeviction``."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from runtime.config.registry import load_registry
from runtime.config.schema import (
    AdmissionSettings,
    HttpSettings,
    MetricsSettings,
    RedisSettings,
    Settings,
)
from runtime.server.app import build_app
from runtime.server.appkeys import MEMORY_RATIO_KEY
from tests.conftest import RedisServer
from tests.integration.conftest import FAST_WORKER, MakeHarness

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

TOKEN = "test-token-oom"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HANDLERS = """
    from runtime import function

    @function(timeout_s=5)
    async def echo(x: int) -> int:
        return x
"""
FILLER = "filler"

Client = TestClient[web.Request, web.Application]


@pytest.fixture(scope="module")
def small_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of its own: these tests fill its memory."""
    server = RedisServer(tmp_path_factory.mktemp("redis-oom"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def plain(small_redis: RedisServer) -> Iterator[sync_redis.Redis]:
    client = sync_redis.Redis.from_url(small_redis.url)
    client.config_set("maxmemory", 0)
    client.flushall()
    yield client
    client.config_set("maxmemory", 0)
    client.flushall()
    client.close()


@pytest.fixture
async def make_app(
    tmp_path: Path, small_redis: RedisServer, plain: sync_redis.Redis
) -> AsyncIterator[Callable[..., Any]]:
    clients: list[Client] = []

    async def make(**sections: Any) -> Client:
        folder = tmp_path / f"functions{len(clients)}"
        folder.mkdir()
        (folder / "handlers.py").write_text(textwrap.dedent(HANDLERS))
        settings = Settings(
            redis=RedisSettings(url=small_redis.url, timeout_s=0.5, connect_timeout_s=0.5),
            http=HttpSettings(token=TOKEN),
            worker=FAST_WORKER,
            metrics=MetricsSettings(refresh_s=0.2),
            **sections,
        )
        client = TestClient(TestServer(build_app(settings, load_registry(folder, {}))))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def fill(plain: sync_redis.Redis) -> None:
    """1 MB of filler, then maxmemory below what is used: every write that may grow memory
    is refused (OOM) until the filler is deleted (``free``)."""
    plain.config_set("maxmemory-policy", "noeviction")
    plain.rpush(FILLER, *[b"x" * 100_000] * 10)
    used = int(plain.info("memory")["used_memory"])
    plain.config_set("maxmemory", used - 200_000)
    try:
        plain.set("probe", b"x")
    except sync_redis.exceptions.OutOfMemoryError:
        return
    raise AssertionError("Redis did not refuse a write")


def free(plain: sync_redis.Redis) -> None:
    plain.delete(FILLER)


async def until(condition: Callable[[], Any], timeout_s: float, what: str) -> float:
    """Wait for an async ``condition`` to be true; returns how long it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if await condition():
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s}s")


async def _status(client: Client, path: str) -> int:
    response = await client.get(path)
    await response.read()
    return response.status


async def test_an_oom_episode_ends_and_admission_opens_again(
    make_app: Callable[..., Any], plain: sync_redis.Redis
) -> None:
    """Found: OOM killed the refresher; the API then answered 429 forever at 7 % memory."""
    client = await make_app()

    async def is_ready() -> bool:
        return await _status(client, "/readyz") == 200

    await until(is_ready, 20, "ready at start")
    fill(plain)
    await until(lambda: _ratio_at_least(client, 0.9), 10, "the refresher sees a full Redis")
    response = await client.post("/v1/functions/echo/jobs", json=1, headers=AUTH)
    assert response.status == 429
    assert (await response.json())["error"]["code"] == "redis_memory_full"
    await asyncio.sleep(1.0)  # the refresher meets OOM a few times (its beat writes)
    free(plain)

    async def admits() -> bool:
        response = await client.post("/v1/functions/echo/jobs", json=2, headers=AUTH)
        await response.read()
        return response.status == 202

    took = await until(admits, 10, "admission open again after memory was freed")
    assert took < 5, took
    await until(is_ready, 5, "ready again")
    assert client.app[MEMORY_RATIO_KEY][0] < 0.9


async def _ratio_at_least(client: Client, ratio: float) -> bool:
    return client.app[MEMORY_RATIO_KEY][0] >= ratio


async def test_a_write_refused_for_oom_is_a_clear_answer_not_a_500(
    make_app: Callable[..., Any], plain: sync_redis.Redis
) -> None:
    """Admission off: the enqueue itself meets OOM (was: 500 internal)."""
    client = await make_app(admission=AdmissionSettings(max_memory_ratio=0))
    fill(plain)
    response = await client.post("/v1/functions/echo/jobs", json=1, headers=AUTH)
    body = await response.json()
    assert response.status == 507, body
    assert body["error"]["code"] == "redis_memory_full"
    assert response.headers["Retry-After"]
    free(plain)


async def test_other_redis_errors_are_a_503_not_a_500(
    make_app: Callable[..., Any], plain: sync_redis.Redis
) -> None:
    """A Redis that refuses a command (here a key of the wrong type under the enqueue's
    idempotency key) answers 503 ``redis_error``."""
    client = await make_app(admission=AdmissionSettings(max_memory_ratio=0))
    plain.config_set("maxmemory", 0)
    response = await client.post(
        "/v1/functions/echo/jobs", json=1, headers={**AUTH, "Idempotency-Key": "k"}
    )
    assert response.status == 202
    for key in plain.scan_iter("*idem*"):
        plain.delete(key)
        plain.hset(key, "bad", "type")
    response = await client.post(
        "/v1/functions/echo/jobs", json=1, headers={**AUTH, "Idempotency-Key": "k"}
    )
    body = await response.json()
    assert response.status == 503, body
    assert body["error"]["code"] == "redis_error"


async def test_readyz_names_a_failing_task_only_while_it_is_down(
    make_app: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresher that raises (a bug, not Redis) is restarted; /readyz is 503 naming it
    while it is down, and 200 again once it runs steadily."""
    from runtime.server import app as app_module

    failures = 3
    real = app_module.refresh_once

    async def flaky(app: web.Application) -> None:
        nonlocal failures
        if failures > 0:
            failures -= 1
            raise RuntimeError("refresher bug")
        await real(app)

    monkeypatch.setattr(app_module, "refresh_once", flaky)
    client = await make_app()
    seen: dict[str, Any] = {}

    async def names_it() -> bool:
        response = await client.get("/readyz")
        body = await response.json()
        seen.update(body["checks"]["tasks"])
        return response.status == 503 and "refresher" in body["checks"]["tasks"].get("down", {})

    await until(names_it, 10, "the refresher named down")
    assert "RuntimeError: refresher bug" in seen["down"]["refresher"]

    async def is_ready() -> bool:
        return await _status(client, "/readyz") == 200

    await until(is_ready, 10, "ready again once the refresher runs")
    assert failures == 0


async def test_a_failing_worker_loop_is_restarted_and_named_while_down(
    make_harness: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.execution.claimer import Claimer

    real = Claimer.run
    failures = 2

    async def flaky(self: Claimer) -> None:
        nonlocal failures
        if failures > 0:
            failures -= 1
            raise RuntimeError("claim loop bug")
        await real(self)

    monkeypatch.setattr(Claimer, "run", flaky)
    harness = await make_harness(HANDLERS)
    dispatcher = harness.dispatcher
    assert dispatcher is not None
    deadline = time.monotonic() + 10
    while "claim:echo" not in dispatcher.down:
        assert time.monotonic() < deadline, "the claim loop never reported down"
        await asyncio.sleep(0.01)
    assert not dispatcher.is_running
    job_id = await harness.client.enqueue("echo", 4)
    assert (await harness.client.wait(job_id, 10)).state == "completed"
    deadline = time.monotonic() + 10
    while not dispatcher.is_running:
        assert time.monotonic() < deadline, dispatcher.down
        await asyncio.sleep(0.01)
    assert failures == 0 and dispatcher.down == {}
