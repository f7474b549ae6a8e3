"""The suite's redis-server: one child process on a free port, driven by its pid.

It is started, killed (any signal), paused (SIGSTOP) and resumed, and restarted on the same
port and data folder, with its AOF (``appendfsync everysec``) or, for the "restarted empty"
scenario, with no persistence and a wiped folder; a scenario may add settings of its own
(``maxmemory-policy allkeys-lru``), kept across restarts. Every process it starts is stopped
by pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def ping(port: int, timeout_s: float = 0.3) -> bool:
    """A raw PING on a fresh connection (no client library, no retries)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A ``redis-server`` child. ``bind_host`` is ``0.0.0.0`` when a Toxiproxy in another
    network namespace must reach it (then protected mode is off: loopback-only otherwise)."""

    def __init__(self, directory: Path, *, bind_host: str = "127.0.0.1") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH: install Redis 7 to run the suite")
        self.binary = binary
        self.directory = directory
        self.bind_host = bind_host
        self.port = free_port()
        self.is_persistent = True
        self.is_paused = False
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.settings: dict[str, str] = {}  # extra `--name value` of every start

    @property
    def url(self) -> str:
        """Direct URL (no proxy), for the harness's own reads and the load generator."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None, "redis-server is not running"  # noqa: S101 — test-harness invariant, the message names the misuse
        return self.process.pid

    def start(self, *, persistent: bool = True) -> None:
        """Start on ``self.port``; with ``persistent`` the AOF in ``directory`` is replayed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.is_persistent = persistent
        args = [
            self.binary, "--port", str(self.port), "--bind", self.bind_host,
            "--dir", str(self.directory), "--save", "", "--daemonize", "no",
            "--appendonly", "yes" if persistent else "no", "--appendfsync", "everysec",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        if self.bind_host != "127.0.0.1":
            args += ["--protected-mode", "no"]
        for name, value in self.settings.items():
            args += [f"--{name}", value]
        self.process = subprocess.Popen(  # noqa: S603 — argv is the redis-server found on PATH plus our own settings, no shell
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        self.starts += 1
        self.is_paused = False
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}; see "
                    f"{self.directory / 'redis.log'}"
                )
            if ping(self.port):
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT_S} s")

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing."""
        self.signal(signal.SIGSTOP)
        self.is_paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.is_paused = False

    def kill(self) -> None:
        """kill -9: no shutdown, no final AOF flush beyond what the kernel already holds."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.signal(signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT_S)
        self.process = None
        self.is_paused = False

    def wipe(self) -> None:
        """Delete the data folder's content (AOF, RDB): the next start is empty."""
        assert self.process is None, "wipe a stopped server only"  # noqa: S101 — test-harness invariant, the message names the misuse
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)

    def stop(self) -> None:
        """Stop whatever state it is in (a paused process gets SIGCONT first)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            if self.is_paused:
                self.resume()
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT_S)
        self.process = None
        self.is_paused = False
