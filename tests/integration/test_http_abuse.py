"""The /v1 API against hostile input, on the real app and a real redis-server: bodies
nested too deep, bodies that never finish, more requests than it handles at once, and
malformed HTTP (one rate-limited log line, no traceback)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from runtime.config.registry import load_registry
from runtime.config.schema import HttpSettings, RedisSettings, Settings
from runtime.server.app import build_app
from runtime.server.appkeys import GUARD_KEY
from runtime.server.limits import depth_exceeds
from runtime.server.listen import GuardedSite
from tests.integration.conftest import FAST_WORKER

pytestmark = pytest.mark.integration

TOKEN = "abuse-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HANDLERS = """
    from typing import Any
    from runtime import function

    @function()
    async def echo(event: Any) -> Any:
        return event

    @function()
    async def keys(event: dict[str, Any]) -> list[str]:
        return sorted(event)

    @function()
    async def count(n: int) -> int:
        return n
"""

Make = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def make_client(tmp_path: Path, redis_url: str) -> AsyncIterator[Make]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(**http: Any) -> TestClient[web.Request, web.Application]:
        folder = tmp_path / f"functions{len(clients)}"
        folder.mkdir()
        (folder / "handlers.py").write_text(textwrap.dedent(HANDLERS))
        settings = Settings(
            redis=RedisSettings(url=redis_url, timeout_s=0.5, connect_timeout_s=0.5),
            http=HttpSettings(token=TOKEN, **http),
            worker=FAST_WORKER,
        )
        client = TestClient(TestServer(build_app(settings, load_registry(folder, {}))))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def nested(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * depth + "1" + close * depth).encode()


@pytest.mark.parametrize("function", ["echo", "keys", "count"])
@pytest.mark.parametrize("route", ["invoke", "jobs"])
async def test_a_body_nested_too_deep_is_a_422_for_every_payload_type(
    make_client: Make, function: str, route: str
) -> None:
    client = await make_client()
    body = b'{"a":' + nested(1000) + b"}"
    response = await client.post(f"/v1/functions/{function}/{route}", data=body, headers=AUTH)
    answer = await response.json()
    assert response.status == 422, answer
    assert answer["error"]["code"] == "too_deep"
    assert "http.max_json_depth=64" in answer["error"]["message"]


async def test_the_depth_limit_is_a_setting_and_counts_objects_and_arrays(
    make_client: Make,
) -> None:
    client = await make_client(max_json_depth=3)
    ok = await client.post("/v1/functions/echo/invoke", data=b'{"a":[{"b":1}]}', headers=AUTH)
    assert ok.status == 200 and await ok.json() == {"a": [{"b": 1}]}
    deep = await client.post("/v1/functions/echo/invoke", data=b'{"a":[{"b":[]}]}', headers=AUTH)
    assert deep.status == 422
    # Brackets inside strings are text, not nesting.
    text = await client.post("/v1/functions/echo/invoke", json={"s": '[[[[{{{{\\"]'}, headers=AUTH)
    assert text.status == 200 and await text.json() == {"s": '[[[[{{{{\\"]'}


@pytest.mark.parametrize(
    ("body", "limit", "exceeds"),
    [
        (b"1", 1, False),
        (b"[]", 1, False),
        (b"[[]]", 1, True),
        (b'["[[[[", {"k": "]]]]}}"}]', 2, False),
        (b'["\\"[[[["]', 1, False),
        (b'["\\\\", [[]]]', 2, True),
        (nested(64), 64, False),
        (nested(65, "{", "}"), 64, True),
        (b"[" * 10_000, 64, True),  # unbalanced: refused as too deep, never decoded
        (b"[1]" * 100_000, 1, False),
    ],
)
def test_depth_scan(body: bytes, limit: int, exceeds: bool) -> None:
    assert depth_exceeds(body, limit) is exceeds


async def test_a_body_that_never_finishes_is_a_408(make_client: Make) -> None:
    client = await make_client(body_timeout_s=0.5)

    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"a": '
        await asyncio.sleep(30)  # never reached in time
        yield b"1}"

    async with asyncio.timeout(10):
        response = await client.post(
            "/v1/functions/echo/jobs",
            data=trickle(),
            headers={**AUTH, "Content-Type": "application/json"},
        )
        answer = await response.json()
    assert response.status == 408, answer
    assert answer["error"]["code"] == "body_timeout"
    assert "http.body_timeout_s=0.5" in answer["error"]["message"]


async def test_requests_past_the_concurrency_cap_get_503_and_probes_still_answer(
    make_client: Make,
) -> None:
    client = await make_client(max_concurrent_requests=2, body_timeout_s=20)
    release = asyncio.Event()

    async def held() -> AsyncIterator[bytes]:
        yield b"["
        await release.wait()
        yield b"1]"

    headers = {**AUTH, "Content-Type": "application/json"}
    invoke = "/v1/functions/echo/invoke"
    slow = [
        asyncio.ensure_future(client.post(invoke, data=held(), headers=headers)) for _ in range(2)
    ]
    try:
        async with asyncio.timeout(15):
            busy = client.app[GUARD_KEY].busy
            while len(busy) < 2:  # noqa: ASYNC110 (until both hold their slot)
                await asyncio.sleep(0.02)
            response = await client.post("/v1/functions/echo/jobs", json=1, headers=AUTH)
            assert response.status == 503
            answer = await response.json()
            assert answer["error"]["code"] == "overloaded"
            assert "http.max_concurrent_requests=2" in answer["error"]["message"]
            assert response.headers["Retry-After"] == "1"
            for probe in ("/healthz", "/readyz"):
                assert (await client.get(probe)).status == 200
            release.set()
            done = await asyncio.gather(*slow)
            assert [r.status for r in done] == [200, 200]
            response = await client.post("/v1/functions/echo/jobs", json=1, headers=AUTH)
            assert response.status == 202
    finally:
        release.set()
        for task in slow:
            task.cancel()


async def test_malformed_requests_log_one_line_without_a_traceback(
    make_client: Make, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client()
    server = client.server
    caplog.set_level(logging.DEBUG)
    for _ in range(5):
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            status_line = await reader.readline()
        assert b" 400 " in status_line, status_line
        writer.close()
        await writer.wait_closed()
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].exc_info is None and "\n" not in lines[0].getMessage()
    assert "malformed http request" in lines[0].getMessage()


async def test_an_integer_beyond_64_bits_is_a_422_not_a_500(make_client: Make) -> None:
    client = await make_client()  # found by schemathesis: an OverflowError in the envelope
    for route in ("invoke", "jobs"):
        body = b'{"a": [' + str(2**70).encode() + b"]}"
        response = await client.post(f"/v1/functions/echo/{route}", data=body, headers=AUTH)
        answer = await response.json()
        assert response.status == 422, answer
        assert "outside -2**63 .. 2**64-1" in answer["error"]["message"]


async def test_an_unknown_query_parameter_is_a_400(make_client: Make) -> None:
    client = await make_client()
    response = await client.post("/v1/functions/echo/invoke?timeout=5", json=1, headers=AUTH)
    answer = await response.json()
    assert response.status == 400, answer
    assert "unknown query parameter 'timeout'" in answer["error"]["message"]
    assert "timeout_s, priority" in answer["error"]["message"]


async def test_a_body_over_the_payload_limit_is_refused_before_it_is_read(
    make_client: Make,
) -> None:
    """A slow 16 MiB body to a function with max_payload_bytes of 1 MiB holds no memory:
    the declared length is refused at once, a chunked body once it passes the limit."""
    client = await make_client(body_timeout_s=20)
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(
            b"POST /v1/functions/echo/jobs HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + f"Content-Length: {16 * 1024 * 1024}\r\n\r\n[1".encode()
        )
        await writer.drain()
        async with asyncio.timeout(5):  # well before the body timeout
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 413"), head
            body = await reader.read()  # the connection is closed after the answer
    finally:
        writer.close()
    answer = json.loads(body)
    assert answer["error"]["code"] == "payload_too_large"
    assert "max_payload_bytes=1048576" in answer["error"]["message"]

    async def chunks() -> AsyncIterator[bytes]:
        yield b"[" + b"1," * 600_000  # past 1 MiB
        await asyncio.sleep(30)  # never sent: the answer comes first
        yield b"1]"

    async with asyncio.timeout(5):
        response = await client.post(
            "/v1/functions/echo/jobs",
            data=chunks(),
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert response.status == 413, await response.text()


async def test_past_max_connections_the_oldest_idle_is_closed_else_a_503(
    tmp_path: Path, redis_url: str
) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    settings = Settings(
        redis=RedisSettings(url=redis_url, timeout_s=0.5, connect_timeout_s=0.5),
        http=HttpSettings(token=TOKEN, max_connections=2, body_timeout_s=20),
        worker=FAST_WORKER,
    )
    app = build_app(settings, load_registry(folder, {}))
    runner = web.AppRunner(app)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0, app[GUARD_KEY])
    await site.start()
    port = int(site.bound.rsplit(":", 1)[1])
    opened: list[asyncio.StreamWriter] = []

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        opened.append(writer)
        return reader, writer

    busy_request = (
        b"POST /v1/functions/echo/jobs HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 10\r\n\r\n[1".encode()
    )
    try:
        async with asyncio.timeout(15):
            idle_reader, _ = await connect()  # connected, never sends a byte
            _, busy = await connect()
            busy.write(busy_request)  # a request in progress: its body never finishes
            while len(app[GUARD_KEY].busy) < 1:  # noqa: ASYNC110 (until it is handled)
                await asyncio.sleep(0.02)
            # A third connection: the idle one makes room.
            reader, writer = await connect()
            assert await idle_reader.read() == b""  # closed by the server
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            writer.write(busy_request)  # now both connections are busy
            while len(app[GUARD_KEY].busy) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            refused_reader, _ = await connect()
            answer = await refused_reader.read()
            assert answer.startswith(b"HTTP/1.1 503"), answer
            assert b'"code":"too_many_connections"' in answer
            assert app[GUARD_KEY].evicted == 1 and app[GUARD_KEY].refused == 1
    finally:
        for writer in opened:
            writer.close()
        await runner.cleanup()


async def test_a_connection_trickling_its_headers_is_closed_after_the_header_timeout(
    make_client: Make,
) -> None:
    client = await make_client(header_timeout_s=0.5)
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    started = asyncio.get_running_loop().time()
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        async with asyncio.timeout(10):
            while not reader.at_eof():  # a header line every 0.1 s, never the blank line
                writer.write(b"X-Slow: 1\r\n")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await reader.read(1)
    finally:
        writer.close()
    elapsed = asyncio.get_running_loop().time() - started
    assert 0.4 < elapsed < 5, elapsed
