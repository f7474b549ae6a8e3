"""SIGTERM always ends a real `runtime serve`, within ``worker.shutdown_grace_s`` plus the
watchdog's margin, whatever its tasks are doing: retrying a Redis that is down, paused or
out of memory, or swallowing their cancellation. An embedded redis-server dies with its
runtime, even a SIGKILLed one."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis

from runtime.cli.serve import WATCHDOG_EXTRA_S
from runtime.client import Client
from tests.conftest import RedisServer, free_port
from tests.integration.serving import FAST, ServeProcesses
from tests.integration.test_redis_errors_app import fill

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

GRACE_S = float(FAST["RUNTIME_WORKER__SHUTDOWN_GRACE_S"])
BOUND_S = GRACE_S + WATCHDOG_EXTRA_S + 5.0  # + 5 s for a loaded machine
HANDLERS = """
    import asyncio, os
    from runtime import function

    WITNESS = {witness!r}

    @function(timeout_s=600)
    async def stubborn(x: int) -> None:
        with open(WITNESS, "a") as f:
            f.write("start\\n")
        while True:  # survives every cancellation: the drain cannot end it
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass

    @function
    async def echo(x: int) -> int:
        return x
"""


class Serving(ServeProcesses):
    def __init__(self, tmp: Path, redis_url: str) -> None:
        super().__init__(tmp, redis_url, {"RUNTIME_LOG__LEVEL": "INFO"})
        self.witness = tmp / "witness.log"
        self.folder = tmp / "functions"
        self.folder.mkdir(exist_ok=True)
        source = HANDLERS.format(witness=str(self.witness))
        (self.folder / "handlers.py").write_text(textwrap.dedent(source))

    def serve(self, redis_url: str | None = None) -> subprocess.Popen[bytes]:
        process = self.spawn("--functions", str(self.folder), redis_url=redis_url)
        self.wait_ready(process, timeout_s=30)
        return process

    def sigterm(self, process: subprocess.Popen[bytes]) -> tuple[int, float]:
        """SIGTERM, then (exit status, seconds until the process ended)."""
        assert process.poll() is None, f"ended before SIGTERM\n{self.logs()}"
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(timeout=BOUND_S + 10)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {BOUND_S + 10}s after SIGTERM") from None
        return status, time.monotonic() - started


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "own-redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def serving(tmp_path: Path, own_redis: RedisServer) -> Iterator[Serving]:
    made = Serving(tmp_path, own_redis.url)
    yield made
    made.stop_all()


def _wait(condition: object, timeout_s: float, what: str, logs: Serving) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s}s\n{logs.logs()}")
        time.sleep(0.05)


def test_a_task_that_swallows_its_cancellation_cannot_hold_the_process(
    serving: Serving, own_redis: RedisServer
) -> None:
    """Found: a loop that survived cancellation kept a SIGTERMed runtime alive for 70
    minutes. Here a handler swallows every cancellation: the watchdog ends the process."""
    process = serving.serve()
    asyncio.run(_enqueue(own_redis.url, "stubborn", 1))
    _wait(serving.witness.exists, 20, "the stubborn job started", serving)
    status, took = serving.sigterm(process)
    print(f"stubborn task: exit {status} after {took:.3f}s (bound {BOUND_S:g}s)")
    assert took < BOUND_S, serving.logs()
    assert status == 1
    assert "shutdown did not finish" in serving.logs()


async def _enqueue(url: str, function: str, payload: object) -> None:
    async with Client(url) as client:
        await client.enqueue(function, payload)


def _unready(serving: Serving, process: subprocess.Popen[bytes]) -> bool:
    try:
        return serving.ready(process)[0] == 503
    except OSError:
        return False


@pytest.mark.parametrize("trouble", ["down", "paused", "oom"])
def test_sigterm_ends_while_every_loop_retries_redis(
    serving: Serving, own_redis: RedisServer, trouble: str
) -> None:
    process = serving.serve()
    plain = sync_redis.Redis.from_url(own_redis.url)
    try:
        if trouble == "down":
            own_redis.stop()
            _wait(lambda: _unready(serving, process), 20, "unready", serving)
        elif trouble == "paused":
            # Long enough for the test, short enough to end by itself (UNPAUSE is paused).
            plain.execute_command("CLIENT", "PAUSE", "30000", "ALL")
            _wait(lambda: _unready(serving, process), 20, "unready", serving)
        else:
            fill(plain)
            _wait(lambda: "OOM" in serving.logs() or "maxmemory" in serving.logs(), 20,
                  "a loop met OOM", serving)  # fmt: skip
        time.sleep(1.0)  # let every loop meet the trouble at least once more
        status, took = serving.sigterm(process)
        print(f"redis {trouble}: exit {status} after {took:.3f}s (bound {BOUND_S:g}s)")
        assert took < BOUND_S, serving.logs()
        assert status == 0, serving.logs()  # a graceful stop, not the watchdog
    finally:
        plain.close()


def test_embedded_redis_dies_with_a_sigkilled_runtime(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "handlers.py").write_text(
        "from runtime import function\n\n@function\nasync def echo(x: int) -> int:\n    return x\n"
    )
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {
        **os.environ,
        **FAST,
        "RUNTIME_LOG__LEVEL": "INFO",
        "RUNTIME_CONFIG_DIR": str(tmp_path),
        "RUNTIME_REDIS__EMBEDDED_DIR": str(tmp_path / "r"),
    }
    env.pop("RUNTIME_REDIS__URL", None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "runtime.cli.main", "serve", "--port", str(port),
             "--functions", str(folder)],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    redis_pid = 0
    try:
        deadline = time.monotonic() + 30
        while not redis_pid:
            assert time.monotonic() < deadline, log_path.read_text()
            assert process.poll() is None, log_path.read_text()
            found = re.search(r"embedded Redis started at \S+ \(pid (\d+)\)", log_path.read_text())
            redis_pid = int(found.group(1)) if found else 0
            time.sleep(0.05)
        assert _alive(redis_pid)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _alive(redis_pid):
            assert time.monotonic() < deadline, "the embedded redis-server outlived its runtime"
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if redis_pid and _alive(redis_pid):
            os.kill(redis_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by init, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
