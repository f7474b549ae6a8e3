"""Test-suite support: start the proxy server, and describe the server a suite drives.

Starters run the proxy server on a free loopback port and give its URL:

- ``running_server()``: an async context manager, in the caller's event loop; for tests
  whose clients are async too.
- ``server_in_thread()``: a context manager that runs the server on its own event loop in
  a background thread; for blocking clients (toxiproxy-python, redis-py, raw sockets),
  which would deadlock a server sharing their thread.
- ``server_process()``: ``python -m chaos.proxy`` as a child process, stopped by its pid.

Each one stops every proxy and closes every socket it opened on exit.

``Target`` says which server a suite drives and how to address its proxies;
``real_target_from_env()`` builds one for a real Toxiproxy from ``TOXIPROXY_URL`` and:

- ``TOXIPROXY_PROXY_HOST``: where tests reach the proxies (default: the URL's host);
- ``TOXIPROXY_LISTEN_HOST``: the host the proxies bind (default ``127.0.0.1``; use
  ``0.0.0.0`` for a server in another container);
- ``TOXIPROXY_UPSTREAM_HOST``: how the server reaches upstreams the tests start (default
  ``127.0.0.1``; any other value makes those upstreams bind ``0.0.0.0``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from chaos.proxy.cli import READY_PREFIX
from chaos.proxy.server import ProxyServer, ServerSettings
from chaos.toxiproxy_http import ToxiproxyHttp

_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


@contextlib.asynccontextmanager
async def running_server(
    *, host: str = "127.0.0.1", port: int = 0, config: Path | None = None, seed: int | None = None
) -> AsyncIterator[str]:
    server = ProxyServer(ServerSettings(host, port, config, seed))
    url = await server.start()
    try:
        yield url
    finally:
        await server.stop()


class _ServerThread:
    """An event loop in a daemon thread that hosts one ``ProxyServer``."""

    def __init__(self, settings: ServerSettings) -> None:
        self._server = ProxyServer(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="chaos-proxy", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
        finally:
            self._loop.close()

    def start(self) -> str:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._server.start(), self._loop)
        try:
            return future.result(START_TIMEOUT_S)
        except BaseException:
            self._halt()
            raise

    def stop(self) -> None:
        try:
            future = asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop)
            future.result(STOP_TIMEOUT_S)
        finally:
            self._halt()

    def _halt(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(STOP_TIMEOUT_S)


@contextlib.contextmanager
def server_in_thread(
    *, host: str = "127.0.0.1", port: int = 0, config: Path | None = None, seed: int | None = None
) -> Iterator[str]:
    server = _ServerThread(ServerSettings(host, port, config, seed))
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@contextlib.contextmanager
def server_process(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    config: Path | None = None,
    seed: int | None = None,
    python: str = sys.executable,
) -> Iterator[str]:
    args = [python, "-m", "chaos.proxy", "--host", host, "--port", str(port)]
    if config is not None:
        args += ["--config", str(config)]
    if seed is not None:
        args += ["--seed", str(seed)]
    # The child imports this very package, even when it is not installed.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PROJECT_ROOT, env.get("PYTHONPATH")]))
    # stderr goes to a file, not a pipe, so a chatty child can never block on it.
    with tempfile.TemporaryFile(mode="w+") as errors:
        process = subprocess.Popen(  # noqa: S603 — argv built here from sys.executable and our own options, no shell
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=env,
        )
        try:
            yield _read_ready_url(process, errors)
        finally:
            _stop_process(process)


def _read_ready_url(process: subprocess.Popen[str], errors: IO[str]) -> str:
    assert process.stdout is not None  # noqa: S101 — narrows a pipe Popen always opens; -O would fail on the next line
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], deadline - time.monotonic())
        if not ready:
            break
        line = process.stdout.readline()
        if line.startswith(READY_PREFIX):
            return line[len(READY_PREFIX) :].strip()
        if not line:
            process.wait(STOP_TIMEOUT_S)
            errors.seek(0)
            message = errors.read().strip()
            raise RuntimeError(f"chaos.proxy exited with {process.returncode}: {message}")
    raise RuntimeError(f"chaos.proxy did not report its URL within {START_TIMEOUT_S} s")


def _stop_process(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()  # SIGTERM to this child's pid only
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


@dataclass(frozen=True, slots=True)
class Target:
    """A Toxiproxy-API server under test (``chaos``: ours; ``real``: a real Toxiproxy)."""

    name: str
    url: str
    listen_host: str = "127.0.0.1"
    proxy_host: str = "127.0.0.1"
    upstream_host: str = "127.0.0.1"

    @property
    def is_real(self) -> bool:
        return self.name == "real"

    @property
    def api(self) -> ToxiproxyHttp:
        return ToxiproxyHttp(self.url)

    @property
    def api_host_port(self) -> tuple[str, int]:
        parsed = urllib.parse.urlsplit(self.url)
        return parsed.hostname or "127.0.0.1", parsed.port or 8474

    @property
    def upstream_bind_host(self) -> str:
        """Where a test's upstream must listen for this server to reach it."""
        return "127.0.0.1" if self.upstream_host == "127.0.0.1" else "0.0.0.0"  # noqa: S104 — a container's upstream must listen where the proxy container reaches it

    def listen(self, port: int = 0) -> str:
        """A listen address to send. Always explicit: a real server in a container cannot
        be reached on toxiproxy-python's default ``127.0.0.1:0``."""
        return f"{self.listen_host}:{port}"

    def upstream(self, port: int) -> str:
        return f"{self.upstream_host}:{port}"


def real_target_from_env(env: Mapping[str, str] = os.environ) -> Target | None:
    """The real Toxiproxy named by ``TOXIPROXY_URL``, or None when it is unset."""
    url = env.get("TOXIPROXY_URL", "").strip().rstrip("/")
    if not url:
        return None
    host = urllib.parse.urlsplit(url).hostname or "127.0.0.1"
    return Target(
        name="real",
        url=url,
        listen_host=env.get("TOXIPROXY_LISTEN_HOST", "127.0.0.1"),
        proxy_host=env.get("TOXIPROXY_PROXY_HOST", host),
        upstream_host=env.get("TOXIPROXY_UPSTREAM_HOST", "127.0.0.1"),
    )


def port_of(listen: str) -> int:
    """The port of a reported listen address; compare ports, never listen strings
    (``[::]:8080`` and ``0.0.0.0:8080`` are the same listener)."""
    return int(listen.rsplit(":", 1)[1])
