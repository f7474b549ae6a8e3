"""The middlewares of the HTTP surface: answers counted, errors, bearer token, tracing.

Every failure becomes a JSON answer, and no Redis error is a 500: Redis unreachable is
``503 redis_unavailable``, Redis out of memory (a write refused: OOM) is
``507 redis_memory_full``, any other error Redis answers (READONLY, NOPERM, MASTERDOWN,
a key of the wrong type, ...) is ``503 redis_error``; each with ``Retry-After``. Every
``/v1`` route needs ``Authorization: Bearer <http.token>`` (compared in constant time);
``/healthz`` and ``/readyz`` stay open, ``/metrics`` too unless
``http.metrics_need_token``. Each authenticated ``/v1`` call is one server span when
tracing is on.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from runtime.errors import BrokerError, BrokerUnavailable, RedisMemoryFull
from runtime.server.answers import ApiError, error_response
from runtime.server.appkeys import METRICS_KEY, SETTINGS_KEY, TOKEN_KEY, TRACING_KEY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("runtime.http")
QUIET_S = 5.0
_last_logged: dict[str, float] = {}  # error code -> when it was last logged
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@web.middleware
async def count_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts every answer in ``http_requests_total`` (outermost: it sees the status the
    client gets, after the error middleware made one). A client that went away is not
    counted: no answer was sent."""
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # only < 400 get past errors_middleware
        status = exc.status
        raise
    except (ConnectionError, asyncio.CancelledError):
        status = 0
        raise
    finally:
        if status:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            method = request.method if request.method in METHODS else "other"
            request.app[METRICS_KEY].http_requests.labels(route, method, str(status)).inc()


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a JSON answer; Redis trouble is a 503, never a 500."""
    try:
        return await handler(request)
    except ApiError as err:
        return error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        message = exc.reason
        if exc.status == 413:
            limit = request.app[SETTINGS_KEY].http.max_body_bytes
            message = f"request body over the limit of {limit} bytes (http.max_body_bytes)"
        elif exc.status == 404:
            message = f"no route {request.method} {request.path}"
        elif exc.status == 405:
            allowed = exc.headers.get("Allow", "")
            message = f"{request.method} is not allowed on {request.path} (allowed: {allowed})"
        return error_response(
            ApiError(exc.status, code.get(exc.status, "http_error"), message, headers={
                k: v for k, v in exc.headers.items() if k.lower() == "allow"
            })
        )  # fmt: skip
    except BrokerError as exc:  # every Redis failure arrives as one (queue/connection.py)
        return error_response(_redis_error(request, exc))
    except ConnectionError:
        raise  # the client's connection (reset, broken pipe): aiohttp's to handle, not ours
    except Exception as exc:
        log.exception("unexpected error in %s %s", request.method, request.path)
        extra: dict[str, Any] = {}
        if request.app[SETTINGS_KEY].http.debug:
            extra["traceback"] = traceback.format_exception(exc)
        return error_response(ApiError(500, "internal", "internal error", **extra))


def _redis_error(request: web.Request, exc: BrokerError) -> ApiError:
    """The answer to a Redis failure; logged at most once every ``QUIET_S`` per kind."""
    retry = {"Retry-After": "1"}
    if isinstance(exc, RedisMemoryFull):
        err = ApiError(
            507,
            "redis_memory_full",
            "Redis is out of memory (maxmemory reached) and refused the write; retry later",
            headers={"Retry-After": str(request.app[SETTINGS_KEY].admission.retry_after_s)},
        )
    elif isinstance(exc, BrokerUnavailable):
        err = ApiError(503, "redis_unavailable", "Redis is unreachable; retry later", headers=retry)
    else:
        err = ApiError(503, "redis_error", f"Redis refused the call: {exc}"[:300], headers=retry)
    now = time.monotonic()
    if now - _last_logged.get(err.code, -QUIET_S) >= QUIET_S:
        _last_logged[err.code] = now
        log.warning(
            "Redis failed %s %s (%s): %s", request.method, request.path, err.code, exc.describe()
        )
    return err


def _needs_token(request: web.Request) -> bool:
    path = request.path
    if path == "/v1" or path.startswith("/v1/"):
        return True
    return path == "/metrics" and request.app[SETTINGS_KEY].http.metrics_need_token


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _needs_token(request):
        expected = request.app[TOKEN_KEY].encode()
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # compare_digest on bytes: constant time whatever the given value is
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise ApiError(
                401,
                "unauthorized",
                "missing or wrong bearer token (Authorization: Bearer <http.token>)",
                headers={"WWW-Authenticate": 'Bearer realm="runtime"'},
            )
    return await handler(request)


@web.middleware
async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    tracing = request.app[TRACING_KEY]
    if not tracing.enabled or not request.path.startswith("/v1/"):
        return await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else request.path
    with tracing.server_span(f"{request.method} {route}", request.headers) as span:
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except (ApiError, web.HTTPException) as exc:
            status = exc.status
            raise
        finally:
            tracing.end_server_span(span, request.method, request.path, status)
