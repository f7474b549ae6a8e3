"""Job control over HTTP: the run history, cancellation and a job's event stream.

| route | answer |
|---|---|
| ``GET /v1/jobs?function=&state=&reason=&since=&until=&cursor=&limit=`` | a page of finished runs, newest first, and ``next_cursor`` |
| ``DELETE /v1/jobs/{id}`` | 200 cancelled (it was queued or delayed); 202 requested (running: it ends ``cancelled``); 409 already finished; 404 unknown |
| ``GET /v1/jobs/{id}/events`` | server-sent events: ``state`` and ``progress`` as they change, then ``end`` (the job) or ``timeout`` |

``since`` and ``until`` take unix seconds, an ISO 8601 instant, or an age (``15m``, ``1h``,
``2d``: that long ago). Pages are bounded (``limit`` at most 500, and at most
``control.MAX_SCAN`` history entries looked at per page); a page may come back short, or
empty, with a ``next_cursor``: follow it until it is null. The event stream polls the job's
record every ``POLL_S`` and ends after ``timeout_s`` (at most ``http.max_wait_s``), at a
shutdown, or when the job ends.
"""  # noqa: E501

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from aiohttp import web

from runtime.errors import PayloadError
from runtime.jobs.envelope import function_of
from runtime.jobs.instants import instant_ms
from runtime.jobs.records import TERMINAL, JobRecord, progress_fields
from runtime.queue.control import MAX_PAGE
from runtime.server.admission import MIN_WAIT_S, float_param, known_params
from runtime.server.answers import ApiError, json_response
from runtime.server.appkeys import BROKER_KEY, REGISTRY_KEY, SETTINGS_KEY, SHUTDOWN_KEY
from runtime.server.routes import job_body

POLL_S = 0.25  # how often an event stream reads its job's record
HISTORY_PARAMS = ("function", "state", "reason", "since", "until", "cursor", "limit")
_json = msgspec.json.Encoder()


def _instant_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return instant_ms(raw)
    except ValueError as exc:
        raise ApiError(400, "bad_parameter", f"?{name}=: {exc}") from None


async def list_jobs(request: web.Request) -> web.Response:
    """``GET /v1/jobs``: a page of one function's run history."""
    known_params(request, *HISTORY_PARAMS)
    q = request.query
    function = q.get("function")
    if not function:
        raise ApiError(400, "bad_parameter", "?function= is required: whose runs to list")
    if function not in request.app[REGISTRY_KEY]:
        raise ApiError(404, "unknown_function", f"no function {function[:100]!r}")
    state = q.get("state")
    if state is not None and state not in TERMINAL:
        raise ApiError(400, "bad_parameter", f"?state= is one of {', '.join(sorted(TERMINAL))}")
    reason = q.get("reason")
    if reason is not None and not 0 < len(reason) <= 100:
        raise ApiError(400, "bad_parameter", "?reason= is 1 to 100 characters")
    limit = float_param(request, "limit", 1, MAX_PAGE)
    if limit is not None and limit != int(limit):
        raise ApiError(400, "bad_parameter", f"?limit= is a whole number from 1 to {MAX_PAGE}")
    try:
        page = await request.app[BROKER_KEY].history(
            function,
            state=state,
            reason=reason,
            since_ms=_instant_param(request, "since"),
            until_ms=_instant_param(request, "until"),
            cursor=q.get("cursor"),
            limit=int(limit or 50),
        )
    except ValueError as exc:  # a cursor this API did not make
        raise ApiError(400, "bad_parameter", f"?cursor=: {exc}") from None
    return json_response(page.as_json())


def _job_id(request: web.Request) -> str:
    job_id = request.match_info["job_id"]
    try:
        function_of(job_id)
    except PayloadError:
        raise ApiError(404, "unknown_job", f"{job_id[:100]!r} is not a job id") from None
    if len(job_id) > 300:
        raise ApiError(404, "unknown_job", "a job id is at most 300 characters")
    return job_id


async def cancel_job(request: web.Request) -> web.Response:
    """``DELETE /v1/jobs/{id}``: cancel the job (see the module docstring)."""
    known_params(request)
    job_id = _job_id(request)
    reply = await request.app[BROKER_KEY].cancel(job_id)
    body = {"job_id": job_id, "outcome": reply.outcome}
    if reply.outcome == "cancelled":
        return json_response({**body, "state": "cancelled", "was": reply.state})
    if reply.outcome == "requested":
        return json_response({**body, "state": "running"}, 202)
    if reply.outcome == "finished":
        raise ApiError(409, "job_finished", f"job {job_id} already ended {reply.state}",
                       job_id=job_id, state=reply.state)  # fmt: skip
    if reply.outcome == "missing":
        raise ApiError(404, "unknown_job", f"no job {job_id!r} (never enqueued, or expired)")
    raise ApiError(409, "corrupt_record", f"job {job_id}: {reply.state}"[:300], job_id=job_id)


def _event(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _json.encode(data) + b"\n\n"


async def job_events(request: web.Request) -> web.StreamResponse:
    """``GET /v1/jobs/{id}/events``: the job's state and progress as server-sent events."""
    known_params(request, "timeout_s")
    job_id = _job_id(request)
    max_wait_s = request.app[SETTINGS_KEY].http.max_wait_s
    timeout_s = float_param(request, "timeout_s", MIN_WAIT_S, max_wait_s) or max_wait_s
    broker = request.app[BROKER_KEY]
    record = await broker.job(job_id)
    if record is None:
        raise ApiError(404, "unknown_job", f"no job {job_id!r} (never enqueued, or expired)")
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    await response.prepare(request)
    shutdown = request.app[SHUTDOWN_KEY]
    deadline = time.monotonic() + timeout_s
    last: JobRecord | None = None
    while True:
        if record is None:  # its record expired meanwhile
            await response.write(_event("gone", {"id": job_id}))
            break
        progress = progress_fields(record).get("progress")
        if progress is not None and (last is None or record.progress != last.progress):
            await response.write(_event("progress", {"id": job_id, **progress}))
        if last is None or record.state != last.state:
            await response.write(_event("state", {"id": job_id, "state": record.state}))
        if record.is_terminal:
            await response.write(_event("end", job_body(record)))
            break
        last = record
        if time.monotonic() >= deadline or shutdown.is_set():
            await response.write(_event("timeout", {"id": job_id, "state": record.state}))
            break
        await asyncio.sleep(POLL_S)
        record = await broker.job(job_id)
    await response.write_eof()
    return response


def add_job_routes(app: web.Application) -> None:
    """After ``routes.add_routes``: ``/v1/jobs/{job_id}`` is declared there (GET)."""
    app.router.add_get("/v1/jobs", list_jobs)
    app.router.add_delete("/v1/jobs/{job_id}", cancel_job)
    app.router.add_get("/v1/jobs/{job_id}/events", job_events)


# -- the OpenAPI operations of these routes (openapi.py puts them in its document) ------

_ERROR_REF = {"$ref": "#/components/schemas/Error"}
JOB_ID_PARAM = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
INSTANT = r"^([0-9]{1,10}(\.[0-9]{1,3})?|[0-9]{1,9}[smhd])$"  # ISO 8601 is taken too


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


def _query(name: str, schema: dict[str, Any], description: str, *, required: bool = False) -> Any:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


RUN_SCHEMA = {
    "type": "object",
    "required": ["id", "state", "attempts", "recoveries", "finished_at"],
    "properties": {
        "id": {"type": "string"},
        "state": {"type": "string", "enum": sorted(TERMINAL)},
        "reason": {"type": ["string", "null"]},
        "attempts": {"type": "integer"},
        "recoveries": {"type": "integer"},
        "priority": {"type": "string"},
        "enqueued_at": {"type": ["string", "null"], "format": "date-time"},
        "started_at": {"type": ["string", "null"], "format": "date-time"},
        "finished_at": {"type": ["string", "null"], "format": "date-time"},
        "duration_ms": {"type": ["integer", "null"]},
    },
}


def history_operation(common: dict[str, Any]) -> dict[str, Any]:
    when = "unix seconds, an ISO 8601 instant, or an age ago (15m, 1h, 2d)"
    instant = {"type": "string", "pattern": INSTANT}
    return {
        "summary": "A function's finished runs (completed, cancelled, dead), newest first",
        "parameters": [
            _query("function", {"type": "string", "minLength": 1}, "whose runs", required=True),
            _query("state", {"type": "string", "enum": sorted(TERMINAL)}, "only this state"),
            _query(
                "reason",
                {"type": "string", "minLength": 1, "maxLength": 100},
                "only this dead-letter reason",
            ),
            _query("since", instant, f"finished at or after: {when}"),
            _query("until", instant, f"finished at or before: {when}"),
            _query(
                "cursor",
                {"type": "string", "pattern": r"^[0-9]{1,15}\.[0-9]{1,9}$"},
                "next_cursor of the previous page",
            ),
            _query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                "jobs per page (default 50)",
            ),
        ],
        "responses": {
            "200": {
                "description": "A page; follow next_cursor until it is null (a page may be "
                "short, or empty, and still have one)",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["jobs", "next_cursor"],
                            "properties": {
                                "jobs": {"type": "array", "items": RUN_SCHEMA},
                                "next_cursor": {"type": ["string", "null"]},
                            },
                        }
                    }
                },
            },
            "400": _err("A bad query parameter"),
            "404": _err("Unknown function"),
            **common,
        },
    }


def cancel_operation(common: dict[str, Any]) -> dict[str, Any]:
    answer = {
        "type": "object",
        "required": ["job_id", "outcome", "state"],
        "properties": {
            "job_id": {"type": "string"},
            "outcome": {"type": "string", "enum": ["cancelled", "requested"]},
            "state": {"type": "string"},
            "was": {"type": "string"},
        },
    }
    return {
        "summary": "Cancel a job: removed if queued or delayed, stopped if running",
        "parameters": [JOB_ID_PARAM],
        "responses": {
            "200": {
                "description": "It was queued or delayed: cancelled, it will never run",
                "content": {"application/json": {"schema": answer}},
            },
            "202": {
                "description": "It is running: its worker stops it and it ends cancelled",
                "content": {"application/json": {"schema": answer}},
            },
            "404": _err("Unknown or expired job"),
            "409": _err("The job already ended (job_finished), or its record is corrupt"),
            **common,
        },
    }


def events_operation(common: dict[str, Any], max_wait_s: float) -> dict[str, Any]:
    return {
        "summary": "A job's state and progress as server-sent events, then its end",
        "parameters": [
            JOB_ID_PARAM,
            _query(
                "timeout_s",
                {"type": "number", "minimum": MIN_WAIT_S, "maximum": max_wait_s},
                "how long to stream at most (default http.max_wait_s)",
            ),
        ],
        "responses": {
            "200": {
                "description": "Events `state`, `progress`, then `end` (the job, as GET "
                "/v1/jobs/{job_id} shows it), `timeout` or `gone`",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            "400": _err("A bad query parameter"),
            "404": _err("Unknown or expired job"),
            **common,
        },
    }
