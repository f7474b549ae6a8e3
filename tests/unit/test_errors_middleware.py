"""The errors middleware answers a Redis failure as Redis's (503/507) and nothing else as
one: an OSError of the disk or of the client's connection is not "Redis unreachable"."""

from __future__ import annotations

import errno

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from runtime.config.schema import Settings
from runtime.errors import BrokerUnavailable, RedisMemoryFull
from runtime.server import middlewares
from runtime.server.appkeys import SETTINGS_KEY


async def _client(exc: BaseException) -> TestClient[web.Request, web.Application]:
    async def handler(request: web.Request) -> web.Response:
        raise exc

    app = web.Application(middlewares=[middlewares.errors_middleware])
    app[SETTINGS_KEY] = Settings()
    app.router.add_get("/boom", handler)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (BrokerUnavailable("connection refused", "ConnectionError"), 503, "redis_unavailable"),
        (RedisMemoryFull("OOM command not allowed", "ResponseError"), 507, "redis_memory_full"),
        (OSError(errno.ENOSPC, "No space left on device"), 500, "internal"),
        (PermissionError(errno.EACCES, "Permission denied"), 500, "internal"),
    ],
)
async def test_only_redis_failures_are_answered_as_redis(
    exc: BaseException, status: int, code: str
) -> None:
    client = await _client(exc)
    try:
        response = await client.get("/boom")
        assert response.status == status
        assert (await response.json())["error"]["code"] == code
    finally:
        await client.close()
