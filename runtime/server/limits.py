"""What the HTTP surface spends on any one client, so that none can starve the others or
the process: open connections, requests handled at once, time to send headers and body,
JSON nesting, and log lines for malformed requests.

- **Connections** (``http.max_connections``, lowered to fit ``RLIMIT_NOFILE``): a new
  connection past the cap closes the oldest *idle* one (no request being handled: still
  sending its headers, or keep-alive between requests); when every one is busy the new
  one gets a ``503`` and is closed. A flood of slow connections therefore cannot exhaust
  file descriptors or lock out ``/healthz``: each newcomer pushes out the oldest idler.
- **Headers** (``http.header_timeout_s``): aiohttp's keep-alive timer, which runs from
  the moment a connection opens or answers, closes a connection still without a complete
  request when it fires, however slowly bytes trickle in.
- **Requests** (``http.max_concurrent_requests``): ``/v1`` requests being handled at
  once, from their headers to their answer (bodies being read count); past it ``503
  overloaded``. The probes and ``/metrics`` are not counted. With the body timeout and
  bodies refused as soon as they pass the function's ``max_payload_bytes``
  (admission.py), this bounds the memory that slow bodies can hold.
- **Depth** (``http.max_json_depth``): a byte scan, before any decoding, of how deeply
  arrays and objects nest (a 1,000-deep body would exhaust the decoder's recursion).
- **Malformed HTTP**: aiohttp logs each with a traceback; here it is one line through
  :func:`runtime.observe.rejects.reject`, rate-limited.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from runtime.observe.rejects import reject
from runtime.server.answers import ApiError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("runtime.http")

FD_RESERVE = 128  # descriptors kept for Redis, the embedded server, logs, executors
UNCOUNTED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_TO_PARENS = bytes.maketrans(b"[]{}", b"()()")


def depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether arrays and objects in ``body`` nest deeper than ``limit`` (also True for
    unbalanced brackets that reach past it: such a body is not JSON anyway).

    Only C-speed passes over the bytes: escapes and then strings are cut out, the
    brackets kept, then each pass removes the innermost pairs; what remains after
    ``limit`` passes is nested deeper. About 0.1 s for 1 MiB of the worst input (the
    caller checks the function's ``max_payload_bytes`` first)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # the common case: not even that many brackets
    # In JSON a backslash only appears in strings, and escapes come in pairs: removing
    # the escaped backslashes, then the escaped quotes, leaves only the strings' quotes.
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[0::2])  # the even pieces: outside strings
    brackets = outside.translate(_TO_PARENS, _NOT_BRACKETS)
    passes = 0
    while brackets and passes <= limit:
        shorter = brackets.replace(b"()", b"")
        if len(shorter) == len(brackets):  # unbalanced: no pair left, only lone brackets
            return passes + brackets.count(b"(") > limit
        brackets = shorter
        passes += 1
    return passes > limit


def effective_max_connections(configured: int) -> int:
    """``http.max_connections``, lowered so that the connections fit the process's soft
    file-descriptor limit with ``FD_RESERVE`` to spare."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft - FD_RESERVE >= configured:
        return configured
    lowered = max(2, soft - FD_RESERVE)
    log.warning(
        "http.max_connections=%d does not fit the file-descriptor limit (ulimit -n = %d): "
        "using %d; raise the limit (ulimit -n) to allow more",
        configured,
        soft,
        lowered,
    )
    return lowered


REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
)
REFUSAL_BODY = (
    b'{"error":{"code":"too_many_connections","message":"every connection this server '
    b'allows (http.max_connections) is handling a request; retry later"}}'
)


class _Refuse(asyncio.Protocol):
    """The answer to a connection past the cap when no idle one can make room."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)  # noqa: S101 — narrows a type: asyncio gives a protocol a write transport
        transport.write(REFUSAL % (len(REFUSAL_BODY), REFUSAL_BODY))
        transport.close()


class ConnectionGuard:
    """Caps open connections (see the module docstring); ``busy`` holds the protocols of
    connections handling a request, kept by :func:`requests_middleware`."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.busy: set[object] = set()
        self.evicted = 0
        self.refused = 0

    def factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        """The protocol factory to listen with, in place of ``server`` itself."""

        def make() -> asyncio.Protocol:
            if self._make_room(server):
                return server()
            self.refused += 1
            reject("http_connection", "connection refused: every allowed one is busy (503)")
            return _Refuse()

        return make

    def _make_room(self, server: web.Server) -> bool:
        open_ = [
            handler
            for handler in server.connections  # oldest first
            if handler.transport is not None and not handler.transport.is_closing()
        ]
        excess = len(open_) + 1 - self.max_connections
        for handler in open_:
            if excess <= 0:
                break
            if handler not in self.busy:
                handler.force_close()
                self.evicted += 1
                excess -= 1
        return excess <= 0


class Concurrency:
    """How many counted requests are being handled, against their cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0


def requests_middleware(guard: ConnectionGuard, concurrency: Concurrency) -> Any:
    """Marks the connection busy while a request is handled (so it is never evicted
    mid-request) and answers ``503 overloaded`` past ``http.max_concurrent_requests``."""

    @web.middleware
    async def limit_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        protocol = request.protocol
        guard.busy.add(protocol)
        try:
            if request.path in UNCOUNTED_PATHS:
                return await handler(request)
            if concurrency.running >= concurrency.limit:
                raise ApiError(
                    503,
                    "overloaded",
                    f"this instance is handling http.max_concurrent_requests="
                    f"{concurrency.limit} requests; retry later",
                    headers={"Retry-After": "1"},
                )
            concurrency.running += 1
            try:
                return await handler(request)
            finally:
                concurrency.running -= 1
        finally:
            guard.busy.discard(protocol)

    return limit_requests


class MalformedRequestLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, for ``handler_args``: a malformed request (one aiohttp
    answers 400 itself) is one rate-limited line, not an ERROR with a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            peer = f" from {args[0]}" if args else ""
            problem = " ".join(f"{type(exc).__name__}: {exc.message}".split())[:200]
            reject("http_request", f"{problem}{peer} (answered 400)")
            return
        self.logger.exception(msg, *args, **kwargs)


def handler_args(header_timeout_s: float) -> dict[str, Any]:
    """aiohttp's per-connection settings (``web.Application(handler_args=...)``)."""
    return {
        "keepalive_timeout": header_timeout_s,
        "logger": MalformedRequestLog(),
        # After an answer that left a body unread (408, 413, 503), how long aiohttp keeps
        # reading and discarding it before closing: short, or a slow body lingers on.
        "lingering_time": 1.0,
    }
