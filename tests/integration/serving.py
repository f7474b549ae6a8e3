"""Real `runtime serve` child processes for tests: spawned on free loopback ports in a
temp folder, probed through /readyz, and stopped by pid."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from tests.conftest import free_port

# Timings short enough for tests: a dead worker's jobs run again within about 1.5 s.
FAST = {
    "RUNTIME_WORKER__LEASE_S": "1.0",
    "RUNTIME_WORKER__HEARTBEAT_S": "0.25",
    "RUNTIME_WORKER__RECLAIM_INTERVAL_S": "0.3",
    "RUNTIME_WORKER__SHUTDOWN_GRACE_S": "5",
    "RUNTIME_REDIS__TIMEOUT_S": "0.5",
    "RUNTIME_REDIS__CONNECT_TIMEOUT_S": "0.5",
}


class ServeProcesses:
    def __init__(self, tmp: Path, redis_url: str, env: Mapping[str, str]) -> None:
        self.tmp = tmp
        self.redis_url = redis_url
        self.config = tmp / "config"  # empty: the defaults, then the RUNTIME_* variables
        self.config.mkdir(exist_ok=True)
        self.env = {**os.environ, **FAST, **env, "RUNTIME_CONFIG_DIR": str(self.config)}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ports: dict[int, int] = {}

    def spawn(
        self, *args: str, redis_url: str | None = None, **env: str
    ) -> subprocess.Popen[bytes]:
        """`runtime serve ARGS` with its own port; its output goes to serve-N.log."""
        port = free_port()
        log = (self.tmp / f"serve-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "runtime.cli.main", "serve", "--port", str(port),
             "--redis", redis_url or self.redis_url, *args],
            cwd=self.tmp, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        self.processes.append(process)
        self.ports[process.pid] = port
        return process

    def ready(self, process: subprocess.Popen[bytes]) -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.ports[process.pid]}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def wait_ready(self, process: subprocess.Popen[bytes], timeout_s: float = 15) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert process.poll() is None, self.logs()
            try:
                if self.ready(process)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"runtime not ready in {timeout_s}s\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.tmp.glob("serve-*.log")))

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], timeout_s: float, logs: Callable[[], str]
) -> None:
    """A plain predicate runs in a thread (it may block: files, HTTP); a coroutine function
    (reads through an async Redis client) is awaited on the loop."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if inspect.iscoroutinefunction(predicate):
            is_met = await predicate()
        else:
            is_met = await asyncio.to_thread(predicate)
        if is_met:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s}s; runtime logs:\n{logs()}")
