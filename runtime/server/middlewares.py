"""The middlewares of the HTTP surface: errors, bearer token, tracing.

Every failure becomes a JSON answer (Redis unreachable is a 503, never a 500). Every
``/v1`` route needs ``Authorization: Bearer <http.token>`` (compared in constant time);
``/healthz`` and ``/readyz`` stay open, ``/metrics`` too unless
``http.metrics_need_token``. Each authenticated ``/v1`` call is one server span when
tracing is on.
"""

from __future__ import annotations

import hmac
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from runtime.errors import BrokerUnavailable
from runtime.server.answers import ApiError, error_response
from runtime.server.appkeys import SETTINGS_KEY, TOKEN_KEY, TRACING_KEY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("runtime.http")


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
    except (BrokerUnavailable, OSError) as exc:  # OSError: kept from before the seam
        log.warning("Redis unavailable during %s %s: %s", request.method, request.path, exc)
        return error_response(
            ApiError(
                503,
                "redis_unavailable",
                "Redis is unreachable; retry later",
                headers={"Retry-After": "1"},
            )
        )
    except Exception as exc:
        log.exception("unexpected error in %s %s", request.method, request.path)
        extra: dict[str, Any] = {}
        if request.app[SETTINGS_KEY].http.debug:
            extra["traceback"] = traceback.format_exception(exc)
        return error_response(ApiError(500, "internal", "internal error", **extra))


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
