"""Reading a /v1 request before it becomes a job: the function its path names, the query
parameters, the ``Idempotency-Key`` header and the JSON payload (within
``http.body_timeout_s``, no deeper than ``http.max_json_depth``), each refused with a
precise 4xx; then admission, a 429 when the function's backlog or Redis memory is over
the ``admission`` limits.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, NoReturn

from aiohttp import web

from runtime.errors import PayloadError, PayloadTooLarge
from runtime.function import PRIORITIES, FunctionSpec, Priority
from runtime.server.answers import ApiError
from runtime.server.appkeys import BROKER_KEY, MEMORY_RATIO_KEY, REGISTRY_KEY, SETTINGS_KEY
from runtime.server.limits import depth_exceeds

MAX_IDEMPOTENCY_KEY_CHARS = 200
MIN_WAIT_S = 0.001  # the shortest ?timeout_s= of an invoke
MAX_DELAY_S = 365 * 86400  # the longest ?delay_s= of an enqueue


def function_spec(request: web.Request) -> FunctionSpec:
    name = request.match_info["name"]
    registry = request.app[REGISTRY_KEY]
    if name not in registry:
        raise ApiError(404, "unknown_function", f"no function named {name!r}")
    return registry.get(name)


def known_params(request: web.Request, *allowed: str) -> None:
    """400 for a query parameter the route does not take (a typo such as ``?timeout=``
    would otherwise be ignored without a word)."""
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise ApiError(
            400,
            "bad_parameter",
            f"unknown query parameter {unknown[0]!r}"[:200]
            + f"; {request.path} takes: {', '.join(allowed)}",
        )


def float_param(request: web.Request, name: str, low: float, high: float) -> float | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (low <= value <= high):
        raise ApiError(
            400, "bad_parameter", f"?{name}={raw!r} must be a number from {low:g} to {high:g}"
        )
    return value


def priority_param(request: web.Request) -> Priority | None:
    raw = request.query.get("priority")
    if raw is None:
        return None
    if raw not in PRIORITIES:
        raise ApiError(
            400, "bad_parameter", f"?priority={raw!r} must be one of {', '.join(PRIORITIES)}"
        )
    return raw


async def read_payload(request: web.Request, spec: FunctionSpec) -> Any:
    body = await read_json_body(request, spec)
    try:
        return spec.decode_json(body)
    except PayloadTooLarge as exc:
        raise ApiError(413, "payload_too_large", str(exc)) from None
    except PayloadError as exc:
        raise ApiError(422, "invalid_payload", str(exc)) from None


async def read_json_body(request: web.Request, spec: FunctionSpec, *, nesting: int = 0) -> bytes:
    """The body (``null`` when empty), read within ``http.body_timeout_s`` and refused
    past its size limit or ``http.max_json_depth`` + ``nesting``. A body of one payload
    (``nesting`` 0) is limited to the function's ``max_payload_bytes`` too; a body that
    wraps payloads (a batch) only to ``http.max_body_bytes``, each payload being checked
    on its own."""
    http = request.app[SETTINGS_KEY].http
    limit = http.max_body_bytes
    if not nesting:
        limit = min(limit, spec.options.max_payload_bytes)
    try:
        async with asyncio.timeout(http.body_timeout_s):
            body = await _read_body(request, spec, limit, http.max_body_bytes)
    except TimeoutError:
        raise ApiError(
            408,
            "body_timeout",
            f"the request body did not arrive within http.body_timeout_s="
            f"{http.body_timeout_s:g}s; send it faster, or raise the setting",
            close=True,
        ) from None
    if not body:
        body = b"null"
    if depth_exceeds(body, http.max_json_depth + nesting):
        raise ApiError(
            422,
            "too_deep",
            f"the body nests arrays and objects deeper than http.max_json_depth="
            f"{http.max_json_depth}"
            + (f" (+{nesting} for the batch)" if nesting else "")
            + "; flatten it, or raise the setting",
        )
    return body


async def _read_body(
    request: web.Request, spec: FunctionSpec, limit: int, max_body_bytes: int
) -> bytes:
    """The body, refused (413) as soon as it is known to be over ``limit`` (the smaller of
    ``http.max_body_bytes`` and, for one payload, the function's ``max_payload_bytes``):
    from its declared length before a byte is read, else once what arrived passes the
    limit. A client sending a large body slowly holds at most that limit in memory."""
    declared = request.content_length
    if declared is not None and declared > limit:
        _too_large(spec, declared, max_body_bytes, exact=True)
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > limit:
            _too_large(spec, len(body), max_body_bytes, exact=False)
    return bytes(body)


def _too_large(spec: FunctionSpec, size: int, max_body_bytes: int, *, exact: bool) -> NoReturn:
    what = f"{size} bytes" if exact else f"at least {size} bytes"
    if size > max_body_bytes:
        message = f"request body over the limit of {max_body_bytes} bytes (http.max_body_bytes)"
    else:
        limit = spec.options.max_payload_bytes
        message = f"{spec.name}: payload is {what}, over max_payload_bytes={limit}"
    raise ApiError(413, "payload_too_large", message, close=True)  # the rest is not read


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise ApiError(
            400,
            "bad_parameter",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters (got {len(key)})",
        )
    return key


async def admit(request: web.Request, spec: FunctionSpec, idempotency_key: str | None) -> None:
    """429 when the function's backlog or Redis memory is over the admission limits; a
    request repeating a known Idempotency-Key adds no job and is always admitted."""
    settings = request.app[SETTINGS_KEY].admission
    broker = request.app[BROKER_KEY]
    limited = settings.max_backlog or settings.max_memory_ratio
    if limited and idempotency_key and await broker.idempotent_job(spec.name, idempotency_key):
        return
    retry = {"Retry-After": str(settings.retry_after_s)}
    ratio = request.app[MEMORY_RATIO_KEY][0]
    if settings.max_memory_ratio and ratio >= settings.max_memory_ratio:
        raise ApiError(
            429,
            "redis_memory_full",
            f"Redis memory is at {ratio:.0%} of maxmemory, over "
            f"admission.max_memory_ratio={settings.max_memory_ratio:g}",
            headers=retry,
        )
    if settings.max_backlog:
        backlog = await request.app[BROKER_KEY].backlog(spec.name)
        if backlog >= settings.max_backlog:
            raise ApiError(
                429,
                "backlog_full",
                f"{spec.name} has {backlog} jobs waiting, at admission.max_backlog="
                f"{settings.max_backlog}",
                headers=retry,
            )


def memory_ratio(memory: object) -> float:
    """used_memory / maxmemory from ``INFO memory``, as the refresher stores it for
    ``admit`` (0.0 without a limit, or for a reply that does not say)."""
    if not isinstance(memory, dict):
        return 0.0
    try:
        maxmemory = int(memory.get("maxmemory", 0) or 0)
        used = int(memory.get("used_memory", 0) or 0)
    except (TypeError, ValueError):
        return 0.0
    return used / maxmemory if maxmemory > 0 else 0.0
