"""The real ``runtime`` command against a real redis-server when something fails (issue 14):
Redis out of memory is one line naming Redis (status 3), not a generic failure; a port in
use names the port (status 1), not "Redis unreachable"."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis

from tests.conftest import RedisServer
from tests.integration.test_redis_errors_app import fill

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = """
    from runtime import function

    @function
    async def echo(x: int) -> int:
        return x
"""


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of its own: a test fills its memory."""
    server = RedisServer(tmp_path_factory.mktemp("redis-cli-errors"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def plain(own_redis: RedisServer) -> Iterator[sync_redis.Redis]:
    client = sync_redis.Redis.from_url(own_redis.url)
    client.config_set("maxmemory", 0)
    client.flushall()
    yield client
    client.config_set("maxmemory", 0)
    client.flushall()
    client.close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "functions").mkdir()
    (tmp_path / "functions" / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    return tmp_path


def _runtime(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNTIME_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "runtime", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_invoke_with_redis_out_of_memory_is_one_line_and_status_3(
    folder: Path, own_redis: RedisServer, plain: sync_redis.Redis
) -> None:
    fill(plain)
    done = _runtime("invoke", "echo", "1", "--async", "--redis", own_redis.url, cwd=folder)
    assert (done.returncode, done.stdout) == (3, "")
    assert done.stderr.startswith(
        "error: Redis is out of memory (maxmemory reached) and refused a write: "
    )
    assert done.stderr.count("\n") == 1  # one line, no traceback
    assert "or raise maxmemory" in done.stderr


def test_serve_on_a_port_in_use_names_the_port_not_redis(
    folder: Path, own_redis: RedisServer, plain: sync_redis.Redis
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _runtime("serve", "--port", str(port), "--redis", own_redis.url, cwd=folder)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1, done.stderr
    assert last.startswith("error: ") and f"('127.0.0.1', {port})" in last
    assert "address already in use" in last and "Redis" not in last
