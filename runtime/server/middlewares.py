"""The bearer-token and tracing middlewares of the /v1 routes.

Every ``/v1`` route needs ``Authorization: Bearer <http.token>`` (compared in constant
time); ``/healthz`` and ``/readyz`` stay open, ``/metrics`` too unless
``http.metrics_need_token``. Each authenticated ``/v1`` call is one server span when
tracing is on. The errors middleware is in ``routes.py``, beside the handlers whose
failures it answers.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from runtime.server.answers import ApiError
from runtime.server.appkeys import SETTINGS_KEY, TOKEN_KEY, TRACING_KEY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
