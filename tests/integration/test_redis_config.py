"""The runtime's check of Redis' ``maxmemory-policy`` (runtime/queue/redis_config.py), on
the real app against a real redis-server: an evicting policy is an ERROR log line, a
failing ``/readyz`` check ``redis_config`` and a gauge at 0, unless accepted explicitly."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from runtime.config.registry import load_registry
from runtime.config.schema import HttpSettings, MetricsSettings, RedisSettings, Settings
from runtime.server.app import build_app
from tests.integration.conftest import FAST_WORKER

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

HANDLERS = """
    from runtime import function

    @function()
    async def hello(name: str) -> str:
        return name
"""

Client = TestClient[web.Request, web.Application]
Make = Callable[..., Awaitable[Client]]


@pytest.fixture
def admin(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client that sets the policy, and puts noeviction back after the test."""
    client = redis.Redis.from_url(redis_url, socket_timeout=30)
    yield client
    client.config_set("maxmemory-policy", "noeviction")
    client.acl_deluser("limited")
    client.close()


@pytest.fixture
async def make_client(tmp_path: Path, redis_url: str) -> AsyncIterator[Make]:
    clients: list[Client] = []

    async def make(*, url: str | None = None, allow_eviction: bool = False) -> Client:
        folder = tmp_path / f"functions{len(clients)}"
        folder.mkdir()
        (folder / "handlers.py").write_text(textwrap.dedent(HANDLERS))
        settings = Settings(
            redis=RedisSettings(url=url or redis_url, timeout_s=0.5, allow_eviction=allow_eviction),
            http=HttpSettings(token="t" * 16),
            worker=FAST_WORKER,
            metrics=MetricsSettings(refresh_s=0.1),
        )
        client = TestClient(TestServer(build_app(settings, load_registry(folder, {}))))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def readyz_until(
    client: Client, predicate: Callable[[int, dict[str, Any]], bool]
) -> tuple[int, dict[str, Any]]:
    """/readyz once it satisfies ``predicate`` (a bounded wait on a condition)."""
    status, body = 0, {}
    async with asyncio.timeout(20):
        while True:
            response = await client.get("/readyz")
            status, body = response.status, await response.json()
            if predicate(status, body):
                return status, body
            await asyncio.sleep(0.05)


def config_check(body: dict[str, Any]) -> dict[str, Any]:
    check: dict[str, Any] = body["checks"].get("redis_config", {})
    return check


async def gauge(client: Client) -> str:
    text = await (await client.get("/metrics")).text()
    return next(line for line in text.splitlines() if line.startswith("redis_eviction_policy_ok"))


async def test_an_evicting_policy_fails_readiness_until_accepted_or_fixed(
    make_client: Make, admin: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    admin.config_set("maxmemory-policy", "allkeys-lru")
    caplog.set_level(logging.WARNING, logger="runtime.redis_config")
    strict = await make_client()
    status, body = await readyz_until(strict, lambda _, b: "ok" in config_check(b))
    assert status == 503
    check = config_check(body)
    assert check["ok"] is False and check["maxmemory_policy"] == "allkeys-lru"
    assert "CONFIG SET maxmemory-policy noeviction" in check["error"]
    assert "redis.allow_eviction" in check["error"]
    assert body["checks"]["redis"]["ok"] is True  # Redis answers; it is misconfigured
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "allkeys-lru" in errors[0].getMessage()
    assert await gauge(strict) == "redis_eviction_policy_ok 0.0"

    relaxed = await make_client(allow_eviction=True)
    status, body = await readyz_until(relaxed, lambda _, b: "ok" in config_check(b))
    assert status == 200
    assert config_check(body)["ok"] is True
    assert "accepted" in config_check(body)["note"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "allkeys-lru" in warnings[0].getMessage()

    admin.config_set("maxmemory-policy", "noeviction")
    status, body = await readyz_until(strict, lambda s, _: s == 200)
    assert config_check(body) == {
        "ok": True,
        "maxmemory_policy": "noeviction",
        "note": "maxmemory-policy is noeviction",
    }
    assert await gauge(strict) == "redis_eviction_policy_ok 1.0"


async def test_without_config_rights_the_policy_is_read_from_info(
    make_client: Make, admin: redis.Redis, redis_server: Any
) -> None:
    admin.config_set("maxmemory-policy", "volatile-lru")
    admin.acl_setuser("limited", enabled=True, passwords=["+pw"], keys=["~*"],
                      channels=["*"], commands=["+@all", "-config"])  # fmt: skip
    client = await make_client(url=f"redis://limited:pw@127.0.0.1:{redis_server.port}/0")
    status, body = await readyz_until(client, lambda _, b: "ok" in config_check(b))
    assert (status, config_check(body)["maxmemory_policy"]) == (503, "volatile-lru")


async def test_a_policy_nobody_may_read_is_a_warning_not_unreadiness(
    make_client: Make, admin: redis.Redis, redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    admin.config_set("maxmemory-policy", "allkeys-lru")
    admin.acl_setuser("limited", enabled=True, passwords=["+pw"], keys=["~*"],
                      channels=["*"], commands=["+@all", "-config", "-info"])  # fmt: skip
    caplog.set_level(logging.WARNING, logger="runtime.redis_config")
    client = await make_client(url=f"redis://limited:pw@127.0.0.1:{redis_server.port}/0")
    # Ready: the unreadable policy does not fail readiness (the predicate waits for 200).
    _, body = await readyz_until(client, lambda s, b: "ok" in config_check(b) and s == 200)
    assert config_check(body)["maxmemory_policy"] is None
    assert "unreadable" in config_check(body)["note"]
    warned = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert await gauge(client) == "redis_eviction_policy_ok -1.0"
