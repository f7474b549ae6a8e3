"""Bounded, blocking network probes for test suites that drive a proxy (ours or a real
Toxiproxy) from plain sockets and blocking clients.

Every wait here has a deadline, so a broken proxy fails a test instead of hanging it, and
every socket handed out by a ``SocketBag`` is closed when the bag is.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

WAIT_S = 3.0
"""Default bound for any single wait."""

T = TypeVar("T")


class SocketBag:
    """The sockets of one test; ``close()`` closes them all."""

    def __init__(self) -> None:
        self._open: list[socket.socket] = []

    def connect(self, host: str, port: int, timeout_s: float = WAIT_S) -> socket.socket:
        return self.adopt(socket.create_connection((host, port), timeout=timeout_s))

    def adopt(self, sock: socket.socket) -> socket.socket:
        self._open.append(sock)
        return sock

    def close(self) -> None:
        for sock in self._open:
            sock.close()
        self._open.clear()


class Upstream:
    """A listening socket standing in for a server: the test drives each accepted side."""

    def __init__(self, bag: SocketBag, bind_host: str = "127.0.0.1") -> None:
        self._bag = bag
        self.listener = bag.adopt(socket.create_server((bind_host, 0)))
        self.port = int(self.listener.getsockname()[1])

    def accept(self, timeout_s: float = WAIT_S) -> socket.socket:
        self.listener.settimeout(timeout_s)
        conn, _ = self.listener.accept()
        conn.settimeout(WAIT_S)
        return self._bag.adopt(conn)


def _set_deadline(sock: socket.socket, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("deadline passed")
    sock.settimeout(remaining)


def recv_exactly(sock: socket.socket, count: int, timeout_s: float = WAIT_S) -> bytes:
    """Exactly ``count`` bytes; AssertionError on an early EOF, TimeoutError when late."""
    deadline = time.monotonic() + timeout_s
    data = bytearray()
    while len(data) < count:
        _set_deadline(sock, deadline)
        piece = sock.recv(min(count - len(data), 1 << 20))
        if not piece:
            raise AssertionError(f"EOF after {len(data)} of {count} bytes")
        data += piece
    return bytes(data)


def recv_until(sock: socket.socket, marker: bytes, timeout_s: float = WAIT_S) -> bytes:
    """Bytes up to and including ``marker`` at the end of what was read."""
    deadline = time.monotonic() + timeout_s
    data = bytearray()
    while not data.endswith(marker):
        _set_deadline(sock, deadline)
        piece = sock.recv(1 << 20)
        if not piece:
            raise AssertionError(f"EOF after {len(data)} bytes, before {marker!r}")
        data += piece
    return bytes(data)


def recv_to_eof(sock: socket.socket, timeout_s: float = WAIT_S) -> bytes:
    """Everything until the peer closes; a reset counts as the close."""
    deadline = time.monotonic() + timeout_s
    data = bytearray()
    while True:
        _set_deadline(sock, deadline)
        try:
            piece = sock.recv(1 << 20)
        except ConnectionResetError:
            return bytes(data)
        if not piece:
            return bytes(data)
        data += piece


def seconds_until_closed(sock: socket.socket, timeout_s: float = WAIT_S) -> float:
    """How long until the peer closed (EOF or reset), discarding any data."""
    started = time.monotonic()
    recv_to_eof(sock, timeout_s)
    return time.monotonic() - started


def assert_silent(sock: socket.socket, quiet_s: float = 0.3) -> None:
    """Nothing arrives, and the connection stays open, for ``quiet_s``."""
    sock.settimeout(quiet_s)
    try:
        data = sock.recv(1024)
    except TimeoutError:
        return
    raise AssertionError(f"expected silence for {quiet_s} s, got {data!r}")


def can_connect(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def bounded(call: Callable[..., T], *args: Any, timeout_s: float = WAIT_S, **kwargs: Any) -> T:
    """Run a blocking call in a daemon thread and wait at most ``timeout_s`` for it.

    For clients that set no timeouts of their own (toxiproxy-python calls ``requests``
    without one): a stalled server then fails the test with ``TimeoutError`` instead of
    hanging it. The call's own exception is re-raised in the caller's thread.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call(*args, **kwargs)
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="bounded-call", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        name = getattr(call, "__qualname__", repr(call))
        raise TimeoutError(f"{name} did not return within {timeout_s} s")
    if "error" in outcome:
        raise outcome["error"]
    result: T = outcome["value"]
    return result
