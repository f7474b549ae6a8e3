"""The HTTP API (``/v1``): invoke functions like a serverless platform, enqueue jobs, read
them back. Every answer is JSON; every error is ``{"error": {"code", "message"}}`` with
a precise status, and bad input is never a 500.

| route | answer |
|---|---|
| ``POST /v1/functions/{name}/invoke`` | 200 the result; 502 the job failed; 504 still running |
| ``POST /v1/functions/{name}/jobs`` | 202 ``{"job_id"}`` and ``Location: /v1/jobs/{id}`` |
| ``POST /v1/functions/{name}/jobs:batch`` | 200, a status per item (``batch.py``) |
| ``GET /v1/jobs/{id}`` | the job's state, attempts, timestamps, result or error |
| ``GET /v1/functions`` | the registry with effective limits and payload schemas |
| ``GET /v1/scale`` | the replicas the fleet needs, for autoscalers (``scale.py``) |
| ``GET /v1/openapi.json`` | the OpenAPI 3 document of these routes |

Every ``/v1`` route needs ``Authorization: Bearer <http.token>`` (compared in constant
time); ``/healthz`` and ``/readyz`` stay open, ``/metrics`` too unless
``http.metrics_need_token`` (``middlewares.py``). Reading and admitting a request is in
``admission.py``, ``ApiError`` and the JSON answers in ``answers.py``, the middlewares
(errors, auth, tracing) in ``middlewares.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from aiohttp import web

from runtime.errors import PayloadError
from runtime.function import FunctionSpec
from runtime.jobs.envelope import function_of
from runtime.jobs.records import JobRecord, job_fields
from runtime.server.admission import (
    MAX_DELAY_S,
    MIN_WAIT_S,
    admit,
    float_param,
    function_spec,
    idempotency_key,
    known_params,
    priority_param,
    read_payload,
)
from runtime.server.answers import ApiError, json_response
from runtime.server.appkeys import (
    BROKER_KEY,
    PRODUCER_KEY,
    REGISTRY_KEY,
    SETTINGS_KEY,
    SHUTDOWN_KEY,
    WAITER_KEY,
)
from runtime.server.batch import enqueue_batch
from runtime.server.scale import scale

MAX_JOB_ID_CHARS = 300


# -- bodies ------------------------------------------------------------------------------


def job_body(record: JobRecord) -> dict[str, Any]:
    body = job_fields(record)
    if record.state == "completed":
        try:
            body["result"] = msgspec.json.decode(record.result or b"null")
        except (msgspec.DecodeError, RecursionError):  # what Redis holds is not trusted
            body["result"] = None
            body["corrupt"] = "res: the stored result is not JSON this API can return"
    elif record.error is not None:
        body["error"] = {"code": record.reason or "handler_error", "message": record.error}
        if record.traceback:  # the /v1 routes need the token: shown to its holders only
            body["traceback"] = record.traceback
    if record.corrupt is not None:
        body["corrupt"] = record.corrupt  # the record fails its checks: shown, not trusted
    return body


def _location(job_id: str) -> dict[str, str]:
    return {"Location": f"/v1/jobs/{job_id}"}


# -- routes ------------------------------------------------------------------------------


async def _enqueue(
    request: web.Request, spec: FunctionSpec, payload: Any, **options: Any
) -> tuple[str, bool]:
    try:
        return await request.app[PRODUCER_KEY].enqueue(spec.name, payload, **options)
    except OverflowError:  # JSON has no integer bounds; the envelope (msgpack) has 64 bits
        raise ApiError(
            422,
            "invalid_payload",
            f"{spec.name}: an integer in the body is outside -2**63 .. 2**64-1, the range "
            "a payload can carry; send it as a string",
        ) from None


async def invoke(request: web.Request) -> web.Response:
    """Enqueue, wait for the result up to the function's timeout (or ?timeout_s=)."""
    spec = function_spec(request)
    settings = request.app[SETTINGS_KEY]
    known_params(request, "timeout_s", "priority")
    timeout_s = float_param(request, "timeout_s", MIN_WAIT_S, settings.http.max_wait_s)
    if timeout_s is None:
        timeout_s = min(spec.options.timeout_s, settings.http.max_wait_s)
    priority = priority_param(request)
    key = idempotency_key(request)
    payload = await read_payload(request, spec)
    await admit(request, spec, key)
    job_id, _ = await _enqueue(
        request, spec, payload, idempotency_key=key, priority=priority, notify=True
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
    spec = function_spec(request)
    known_params(request, "delay_s", "priority")
    delay_s = float_param(request, "delay_s", 0, MAX_DELAY_S)
    priority = priority_param(request)
    key = idempotency_key(request)
    payload = await read_payload(request, spec)
    await admit(request, spec, key)
    job_id, created = await _enqueue(
        request, spec, payload, idempotency_key=key, priority=priority, delay_s=delay_s
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

    max_wait_s = request.app[SETTINGS_KEY].http.max_wait_s
    return json_response(document(request.app[REGISTRY_KEY], max_wait_s=max_wait_s))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/functions/{name}/invoke", invoke)
    app.router.add_post("/v1/functions/{name}/jobs", enqueue)
    app.router.add_post("/v1/functions/{name}/jobs:batch", enqueue_batch)
    app.router.add_get("/v1/jobs/{job_id}", get_job)
    app.router.add_get("/v1/functions", list_functions)
    app.router.add_get("/v1/scale", scale)
    app.router.add_get("/v1/openapi.json", openapi)
