"""A real ``runtime serve`` child under a slow-connection flood at a 1,024 file-descriptor
limit, and the files it leaves on disk (the token, the embedded Redis folder)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration

TOKEN = "limits-token"
HANDLERS = """
    from runtime import function

    @function()
    async def double(x: int) -> int:
        return 2 * x
"""
FD_LIMIT = 1024
SLOW_SOCKETS = 1100  # more than the child's descriptors


def _limit_fds() -> None:  # runs in the child between fork and exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


class Child:
    """One ``runtime serve`` on a free port in ``folder``; its output in serve.log."""

    def __init__(
        self,
        folder: Path,
        env: dict[str, str],
        *,
        limit_fds: bool = False,
        port: int = 0,
        handlers: str = HANDLERS,
    ) -> None:
        self.folder = folder
        self.port = port or free_port()
        (folder / "functions").mkdir(exist_ok=True)
        (folder / "functions" / "handlers.py").write_text(textwrap.dedent(handlers))
        (folder / "config").mkdir(exist_ok=True)
        self.log = folder / f"serve-{self.port}-{len(list(folder.glob('serve-*')))}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "runtime.cli.main", "serve", "--port", str(self.port),
                 "--functions", "functions"],
                cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "RUNTIME_CONFIG_DIR": str(folder / "config"),
                     "RUNTIME_LOG__LEVEL": "INFO", **env},
                preexec_fn=_limit_fds if limit_fds else None,
            )  # fmt: skip

    def get(self, path: str, timeout_s: float = 5.0, **headers: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def post(self, path: str, body: bytes, timeout_s: float = 5.0) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.logs()
            with contextlib.suppress(OSError, http.client.HTTPException):
                if predicate():
                    return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout_s}s\n{self.logs()}")

    def wait_ready(self) -> None:
        self.wait_until(lambda: self.get("/readyz", timeout_s=1)[0] == 200)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def children(tmp_path: Path) -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.stop()


@pytest.mark.timeout(120)
def test_probes_and_invoke_answer_under_a_slow_connection_flood_at_1024_fds(
    tmp_path: Path, redis_url: str, children: list[Child]
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < SLOW_SOCKETS + 200:  # the test's own sockets
        if hard < SLOW_SOCKETS + 200:
            pytest.skip(f"this test needs {SLOW_SOCKETS + 200} descriptors (ulimit -Hn {hard})")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # A long header timeout: the flood is held off by the connection cap, not the timer.
    env = {"RUNTIME_REDIS__URL": redis_url, "RUNTIME_HTTP__TOKEN": TOKEN,
           "RUNTIME_HTTP__HEADER_TIMEOUT_S": "300"}  # fmt: skip
    child = Child(tmp_path, env, limit_fds=True)
    children.append(child)
    child.wait_ready()
    sockets: list[socket.socket] = []
    try:
        refused = 0
        for _ in range(SLOW_SOCKETS):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(2.0)
            try:
                s.connect(("127.0.0.1", child.port))
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            except OSError:
                refused += 1
                s.close()
                continue
            sockets.append(s)
        assert child.process.poll() is None, child.logs()
        # While every slow socket is still open on this side, the probes answer fast.
        started = time.monotonic()
        assert child.get("/healthz", timeout_s=5)[0] == 200
        assert child.get("/readyz", timeout_s=5)[0] == 200
        status, body = child.post("/v1/functions/double/invoke", b"21", timeout_s=10)
        assert (status, json.loads(body)) == (200, 42)
        elapsed = time.monotonic() - started
        assert elapsed < 10, elapsed
        closed = 0
        for s in sockets:
            s.setblocking(False)
            try:
                closed += s.recv(1) == b""
            except BlockingIOError:
                pass  # still open
            except ConnectionResetError:
                closed += 1
        # The server held at most http.max_connections (512) of them open.
        assert closed + refused >= SLOW_SOCKETS - 512, (closed, refused)
        assert "Too many open files" not in child.logs()
    finally:
        for s in sockets:
            s.close()


def _modes(folder: Path) -> dict[str, int]:
    return {
        str(path.relative_to(folder)): stat.S_IMODE(path.lstat().st_mode)
        for path in [folder, *folder.rglob("*")]
    }


@pytest.mark.timeout(60)
def test_the_embedded_redis_folder_and_its_files_are_private(
    tmp_path: Path, children: list[Child]
) -> None:
    child = Child(tmp_path, {"RUNTIME_HTTP__TOKEN": TOKEN})
    children.append(child)
    child.wait_ready()
    status, _ = child.post("/v1/functions/double/invoke", b"21", timeout_s=10)
    assert status == 200
    folder = tmp_path / ".runtime" / "redis"
    child.wait_until(lambda: any(folder.rglob("*.aof")))  # the AOF holds payloads
    modes = _modes(folder)
    assert modes["."] == 0o700, modes
    for name, mode in modes.items():
        if stat.S_ISDIR((folder / name).lstat().st_mode):
            assert mode == 0o700, (name, oct(mode))
        else:
            assert mode & 0o077 == 0, (name, oct(mode))  # nothing for group or others


@pytest.mark.timeout(60)
def test_a_serve_that_cannot_bind_leaves_the_running_ones_token(
    tmp_path: Path, redis_url: str, children: list[Child]
) -> None:
    first = Child(tmp_path, {"RUNTIME_REDIS__URL": redis_url})
    children.append(first)
    first.wait_ready()
    token_file = tmp_path / ".runtime" / "http-token"
    token = token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    second = Child(tmp_path, {"RUNTIME_REDIS__URL": redis_url}, port=first.port)
    children.append(second)
    assert second.process.wait(timeout=30) != 0, second.logs()
    assert token_file.read_text().strip() == token, second.logs()
    status, _ = first.get("/v1/functions", Authorization=f"Bearer {token}")
    assert status == 200
