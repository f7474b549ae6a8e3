"""The HTTP API (``/v1``): invoke functions like a serverless platform, enqueue jobs, read
them back. Every answer is JSON; every error is ``{"error": {"code", "message"}}`` with
a precise status, and bad input is never a 500.

| route | answer |
|---|---|
| ``POST /v1/functions/{name}/invoke`` | 200 the result; 502 the job failed; 504 still running |
| ``POST /v1/functions/{name}/jobs`` | 202 ``{"job_id"}`` and ``Location: /v1/jobs/{id}`` |
| ``GET /v1/jobs/{id}`` | the job's state, attempts, timestamps, result or error |
| ``GET /v1/functions`` | the registry with effective limits and payload schemas |
| ``GET /v1/openapi.json`` | the OpenAPI 3 document of these routes |

Every ``/v1`` route needs ``Authorization: Bearer <http.token>`` (compared in constant
time); ``/healthz`` and ``/readyz`` stay open, ``/metrics`` too unless
``http.metrics_need_token``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from runtime.errors import PayloadError, PayloadTooLarge
from runtime.function import PRIORITIES, FunctionSpec, Priority
from runtime.jobs.envelope import function_of
from runtime.jobs.records import JobRecord
from runtime.queue.broker import REDIS_ERRORS
from runtime.server.appkeys import (
    BROKER_KEY,
    MEMORY_RATIO_KEY,
    PRODUCER_KEY,
    REGISTRY_KEY,
    SETTINGS_KEY,
    SHUTDOWN_KEY,
    TOKEN_KEY,
    TRACING_KEY,
    WAITER_KEY,
)

log = logging.getLogger("runtime.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_json = msgspec.json.Encoder()
MAX_JOB_ID_CHARS = 300
MAX_IDEMPOTENCY_KEY_CHARS = 200


class ApiError(Exception):
    """An answer other than success, raised anywhere in a handler."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_json.encode(body),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def error_response(err: ApiError) -> web.Response:
    body = {"error": {"code": err.code, "message": err.message}, **err.extra}
    return json_response(body, err.status, err.headers)


# -- middlewares -------------------------------------------------------------------------


def _needs_token(request: web.Request) -> bool:
    path = request.path
    if path == "/v1" or path.startswith("/v1/"):
        return True
    return path == "/metrics" and request.app[SETTINGS_KEY].http.metrics_need_token


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
    except REDIS_ERRORS as exc:
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


# -- helpers -----------------------------------------------------------------------------


def _spec(request: web.Request) -> FunctionSpec:
    name = request.match_info["name"]
    registry = request.app[REGISTRY_KEY]
    if name not in registry:
        raise ApiError(404, "unknown_function", f"no function named {name!r}")
    return registry.get(name)


def _float_param(request: web.Request, name: str, low: float, high: float) -> float | None:
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


def _priority_param(request: web.Request) -> Priority | None:
    raw = request.query.get("priority")
    if raw is None:
        return None
    if raw not in PRIORITIES:
        raise ApiError(
            400, "bad_parameter", f"?priority={raw!r} must be one of {', '.join(PRIORITIES)}"
        )
    return raw


async def _payload(request: web.Request, spec: FunctionSpec) -> Any:
    body = await request.read()  # aiohttp refuses bodies over http.max_body_bytes (413)
    if not body:
        body = b"null"
    try:
        return spec.decode_json(body)
    except PayloadTooLarge as exc:
        raise ApiError(413, "payload_too_large", str(exc)) from None
    except PayloadError as exc:
        raise ApiError(422, "invalid_payload", str(exc)) from None


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise ApiError(
            400,
            "bad_parameter",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters (got {len(key)})",
        )
    return key


async def _admit(request: web.Request, spec: FunctionSpec, idempotency_key: str | None) -> None:
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


def _ms_to_iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def job_body(record: JobRecord) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": record.id,
        "function": record.function,
        "state": record.state,
        "priority": record.priority,
        "attempts": record.attempts,
        "recoveries": record.recoveries,
        "enqueued_at": _ms_to_iso(record.enqueued_ms),
        "started_at": _ms_to_iso(record.started_ms),
        "finished_at": _ms_to_iso(record.finished_ms),
    }
    if record.state == "completed":
        body["result"] = msgspec.json.decode(record.result or b"null")
    elif record.error is not None:
        body["error"] = {"code": record.reason or "handler_error", "message": record.error}
    return body


def _location(job_id: str) -> dict[str, str]:
    return {"Location": f"/v1/jobs/{job_id}"}


# -- routes ------------------------------------------------------------------------------


async def invoke(request: web.Request) -> web.Response:
    """Enqueue, wait for the result up to the function's timeout (or ?timeout_s=)."""
    spec = _spec(request)
    settings = request.app[SETTINGS_KEY]
    timeout_s = _float_param(request, "timeout_s", 0.001, settings.http.max_wait_s)
    if timeout_s is None:
        timeout_s = min(spec.options.timeout_s, settings.http.max_wait_s)
    priority = _priority_param(request)
    key = _idempotency_key(request)
    payload = await _payload(request, spec)
    await _admit(request, spec, key)
    job_id, _ = await request.app[PRODUCER_KEY].enqueue(
        spec.name, payload, idempotency_key=key, priority=priority, notify=True
    )
    wait = asyncio.ensure_future(request.app[WAITER_KEY].wait(job_id, timeout_s))
    stop = asyncio.ensure_future(request.app[SHUTDOWN_KEY].wait())
    try:
        await asyncio.wait({wait, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not wait.done():
            wait.cancel()
    record = wait.result() if wait.done() and not wait.cancelled() else None
    headers = {**_location(job_id), "X-Job-Id": job_id}
    if record is not None and record.state == "completed":
        return web.Response(
            body=record.result or b"null", content_type="application/json", headers=headers
        )
    if record is not None and record.state == "dead":
        raise ApiError(
            502,
            record.reason or "handler_error",
            record.error or "the job failed",
            headers=headers,
            job_id=job_id,
        )
    if wait.done():  # finished waiting, not terminal: still running
        raise ApiError(
            504,
            "timeout",
            f"job {job_id} not finished within {timeout_s:g}s; poll its Location",
            headers=headers,
            job_id=job_id,
        )
    raise ApiError(
        503,
        "shutting_down",
        f"this instance is shutting down; job {job_id} continues, poll its Location",
        headers={**headers, "Retry-After": "1"},
        job_id=job_id,
    )


async def enqueue(request: web.Request) -> web.Response:
    spec = _spec(request)
    delay_s = _float_param(request, "delay_s", 0, 365 * 86400)
    priority = _priority_param(request)
    key = _idempotency_key(request)
    payload = await _payload(request, spec)
    await _admit(request, spec, key)
    job_id, created = await request.app[PRODUCER_KEY].enqueue(
        spec.name, payload, idempotency_key=key, priority=priority, delay_s=delay_s
    )
    return json_response({"job_id": job_id, "created": created}, 202, _location(job_id))


async def get_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    try:
        function = function_of(job_id)
    except PayloadError:
        function = ""
    if not function or len(job_id) > MAX_JOB_ID_CHARS:
        raise ApiError(404, "unknown_job", f"{job_id!r} is not a job id (<function>.<id>)")
    record = await request.app[BROKER_KEY].job(job_id)
    if record is None:
        raise ApiError(404, "unknown_job", f"no job {job_id!r} (never enqueued, or expired)")
    return json_response(job_body(record))


def function_body(spec: FunctionSpec) -> dict[str, Any]:
    o = spec.options
    return {
        "name": spec.name,
        "executor": spec.executor,
        "concurrency": o.concurrency,
        "max_in_flight": o.max_in_flight,
        "timeout_s": o.timeout_s,
        "max_attempts": o.max_attempts,
        "max_recoveries": o.max_recoveries,
        "backoff": {"base_s": o.backoff.base_s, "max_s": o.backoff.max_s},
        "priority": o.priority,
        "max_payload_bytes": o.max_payload_bytes,
        "payload_schema": msgspec.json.schema(spec.payload_type),
    }


async def list_functions(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY_KEY]
    return json_response({"functions": [function_body(spec) for spec in registry]})


async def openapi(request: web.Request) -> web.Response:
    from runtime.server.openapi import document

    return json_response(document(request.app[REGISTRY_KEY]))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/functions/{name}/invoke", invoke)
    app.router.add_post("/v1/functions/{name}/jobs", enqueue)
    app.router.add_get("/v1/jobs/{job_id}", get_job)
    app.router.add_get("/v1/functions", list_functions)
    app.router.add_get("/v1/openapi.json", openapi)
