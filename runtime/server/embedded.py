"""The embedded default: a private ``redis-server`` child when no Redis URL is configured.

Data lives in ``redis.embedded_dir`` (AOF ``everysec``), the server listens on a unix
socket there (or a free loopback port when the socket path would be too long), and its URL
is written to ``redis.url`` in that folder so that ``runtime invoke`` and friends on the same
machine find it. The folder is 0700 and everything in it 0600 (the server runs with umask
077): its AOF holds every payload and result. A second ``runtime serve`` in the same
folder shares the running server instead of starting another; only the process that
started it stops it.

The server never outlives the runtime that started it, even one that is SIGKILLed: on
Linux it is started with a parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGTERM)``,
SIGTERM so that it still flushes its AOF). The signal follows the *thread* that started
it, so ``start()`` must run on a thread that lives as long as the process (the app calls
it on the event loop's thread, before serving). A runtime sharing that server loses it
when its owner dies, and reports Redis unavailable until a new one is started.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from runtime.errors import EmbeddedRedisError

log = logging.getLogger("runtime.embedded")
URL_FILE = "redis.url"
MAX_UNIX_PATH = 100
PR_SET_PDEATHSIG = 1  # linux/prctl.h
PRIVATE_UMASK = 0o077
INSTALL_HINT = (
    "install one (Debian/Ubuntu: `sudo apt-get install redis-server`), or point the runtime "
    "at an existing Redis with --redis URL or RUNTIME_REDIS__URL=redis://host:6379/0"
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str, timeout_s: float = 0.5) -> bool:
    """A raw PING, so this module needs no event loop."""
    try:
        if url.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = url.removeprefix("unix://")
        else:
            host, _, port = url.removeprefix("redis://").rstrip("/").rpartition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (host, int(port))
        with sock:
            sock.settimeout(timeout_s)
            sock.connect(address)
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except (OSError, ValueError):
        return False


def _child_setup() -> Callable[[], None]:
    """The ``preexec_fn`` of the server: a private umask (its AOF, log and socket hold
    every payload and result: 0600 files, 0700 folders), and on Linux SIGTERM when its
    parent dies (elsewhere, a SIGKILLed runtime leaves its server running)."""
    prctl: Callable[..., int] | None = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    parent = os.getpid()

    def setup() -> None:
        os.umask(PRIVATE_UMASK)
        if prctl is None:
            return
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody would signal
            os.kill(os.getpid(), signal.SIGTERM)

    return setup


def _make_private(folder: Path) -> None:
    """The data folder 0700 and what an older runtime left in it without group or other
    access (it was 0755 with a 0644 AOF before)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        private = 0o700 if path.is_dir() else mode & 0o700
        if mode & 0o777 != private:
            path.chmod(private)


def discover(data_dir: str | Path) -> str | None:
    """The URL of a live embedded Redis in ``data_dir``, if one answers."""
    path = Path(data_dir) / URL_FILE
    try:
        url = path.read_text().strip()
    except OSError:
        return None
    return url if url and _answers(url) else None


class EmbeddedRedis:
    """Start (or join) the private redis-server; ``stop()`` only stops what it started."""

    def __init__(self, data_dir: str | Path, *, start_timeout_s: float = 10.0) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._start_timeout_s = start_timeout_s

    def start(self) -> str:
        existing = discover(self.data_dir)
        if existing:
            log.info("sharing the embedded Redis already running at %s", existing)
            self.url = existing
            return existing
        binary = shutil.which("redis-server")
        if binary is None:
            raise EmbeddedRedisError(f"no redis-server found on PATH; {INSTALL_HINT}")
        _make_private(self.data_dir)
        sock = self.data_dir / "redis.sock"
        args = [
            binary,
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        if len(str(sock)) <= MAX_UNIX_PATH:
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
            args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
            self.url = f"unix://{sock}"
        else:
            port = _free_port()
            args += ["--port", str(port), "--bind", "127.0.0.1"]
            self.url = f"redis://127.0.0.1:{port}"
        try:
            self._process = subprocess.Popen(  # noqa: S603 — argv is the redis-server found on PATH plus our own options, no shell
                args, stdin=subprocess.DEVNULL, preexec_fn=_child_setup()
            )
        except OSError as exc:
            raise EmbeddedRedisError(f"cannot start {binary}: {exc}; {INSTALL_HINT}") from None
        deadline = time.monotonic() + self._start_timeout_s
        while not _answers(self.url):
            if self._process.poll() is not None:
                raise EmbeddedRedisError(
                    f"redis-server exited with status {self._process.returncode} at start; "
                    f"see {self.data_dir / 'redis.log'}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedRedisError(
                    f"redis-server did not answer within {self._start_timeout_s:g}s; "
                    f"see {self.data_dir / 'redis.log'}"
                )
            time.sleep(0.02)
        fd = os.open(self.data_dir / URL_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.url + "\n")
        log.info("embedded Redis started at %s (pid %d)", self.url, self._process.pid)
        return self.url

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / URL_FILE).unlink()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # redis flushes its AOF on SIGTERM
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.info("embedded Redis stopped")
