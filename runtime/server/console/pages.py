"""The console's pages (GET, server-rendered) and actions (form POST, then a redirect or
a report page). Every handler here is wrapped by ``session.signed_in``; each reads what
it shows through ``data.py``. A Redis failure is a 503 page, never a traceback.

| route | page |
|---|---|
| ``/ui`` | the fleet: instances, and a page of functions (``/ui/fleet`` is its table alone) |
| ``/ui/functions/{name}`` | limits, counts, recent runs, the newest failures with tracebacks |
| ``/ui/jobs/{job_id}`` | state, attempts, times, payload, result or error, trace |
| ``/ui/dlq/{name}`` | a page of dead letters, filter by reason and age; requeue or purge |
| ``/ui/deployments`` | versions, what each runtime runs, rollback |
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from runtime.errors import BrokerError, DeployError
from runtime.queue.dlq import MAX_BATCH, DlqFilter
from runtime.server.appkeys import REGISTRY_KEY, SETTINGS_KEY
from runtime.server.console import data
from runtime.server.console.session import CSRF_FIELD, is_number

MAX_QUERY_CHARS = 64


def _int(request: web.Request, name: str) -> int:
    raw = request.query.get(name, "0")
    return int(raw) if is_number(raw, 9) else 0


def _float(raw: object) -> float:
    try:
        value = float(raw) if isinstance(raw, str) and len(raw) < 20 else 0.0
    except ValueError:
        return 0.0
    return value if value == value and 0 <= value < 1e9 else 0.0  # NaN, negatives: none


def _offset(raw: object) -> int:
    return int(raw) if is_number(raw, 11) and isinstance(raw, str) else 0


def render(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    context = {
        **context,
        "csrf": request.get("console_csrf", ""),
        "csrf_field": CSRF_FIELD,
        "namespace": request.config_dict[SETTINGS_KEY].namespace,
        "refresh_ms": 2000,
    }
    return aiohttp_jinja2.render_template(template, request, context, status=status)


def _unavailable(request: web.Request, exc: BrokerError) -> web.Response:
    return render(request, "error.html", {"title": "Redis error", "message": str(exc)[:300]}, 503)


def _not_found(request: web.Request, what: str) -> web.Response:
    return render(request, "error.html", {"title": "Not found", "message": what}, 404)


def _function(request: web.Request) -> str | None:
    name = request.match_info["name"]
    return name if name in request.config_dict[REGISTRY_KEY].names else None


# -- pages ------------------------------------------------------------------------------------


async def overview(request: web.Request) -> web.Response:
    return await _overview(request, "overview.html")


async def fleet(request: web.Request) -> web.Response:
    """The overview's table alone: what the page's script swaps in every 2 s."""
    return await _overview(request, "_fleet.html")


async def _overview(request: web.Request, template: str) -> web.Response:
    query = request.query.get("q", "")[:MAX_QUERY_CHARS]
    try:
        view = await data.overview(request.app, _int(request, "page"), query)
    except BrokerError as exc:
        return _unavailable(request, exc)
    return render(request, template, {"view": view, "title": "Fleet"})


async def function(request: web.Request) -> web.Response:
    name = _function(request)
    if name is None:
        return _not_found(request, f"no function {request.match_info['name']!r} is registered")
    try:
        view = await data.function_view(request.app, name)
    except BrokerError as exc:
        return _unavailable(request, exc)
    if view is None:
        return _not_found(request, f"no function {name!r}")
    return render(request, "function.html", {"view": view, "title": name})


async def job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    try:
        view = await data.job_view(request.app, job_id)
    except BrokerError as exc:
        return _unavailable(request, exc)
    if view is None:
        return _not_found(request, f"no job {job_id[:300]!r} (never enqueued, or expired)")
    return render(request, "job.html", {"view": view, "title": job_id})


def _filter(values: Any) -> DlqFilter:
    given = [r for r in values.getall("reason", []) if isinstance(r, str)]
    reasons = [r.strip()[:64] for raw in given for r in raw.split(",")][:20]
    return data.dlq_filter(reasons, _float(values.get("older_than_s", "0")))


async def dlq(request: web.Request) -> web.Response:
    name = _function(request)
    if name is None:
        return _not_found(request, f"no function {request.match_info['name']!r} is registered")
    try:
        view = await data.dlq_view(request.app, name, _int(request, "page"), _filter(request.query))
    except BrokerError as exc:
        return _unavailable(request, exc)

    query = [("reason", ",".join(view.reasons))] if view.reasons else []
    if view.older_than_s:
        query.append(("older_than_s", f"{view.older_than_s:g}"))
    filter_query = urlencode(query) + "&" if query else ""
    context = {"view": view, "title": f"DLQ of {name}", "filter_query": filter_query}
    return render(request, "dlq.html", context)


async def deployments(request: web.Request) -> web.Response:
    try:
        view = await data.deployments_view(request.app)
    except BrokerError as exc:
        return _unavailable(request, exc)
    notice = ""  # built from numbers only: a crafted link cannot put words on this page
    activated, was = request.query.get("activated", ""), request.query.get("was", "")
    if is_number(activated, 18) and (is_number(was, 18) or not was):
        if activated == was:
            notice = f"version {activated} was already active; runtimes that refused it retry now"
        else:
            notice = f"version {activated} is active again (was {was or 'none'})"
    context = {"view": view, "title": "Deployments", "notice": notice}
    return render(request, "deployments.html", context)


# -- actions ----------------------------------------------------------------------------------


async def dlq_action(request: web.Request) -> web.Response:
    name = _function(request)
    if name is None:
        return _not_found(request, f"no function {request.match_info['name']!r} is registered")
    form = await request.post()
    action = request.query.get("action")
    if action not in ("requeue", "purge"):
        return render(
            request, "error.html", {"title": "Bad request", "message": "unknown action"}, 400
        )
    flt = _filter(form)
    ids = [i for i in form.getall("id", []) if isinstance(i, str) and len(i) <= 300]
    if form.get("scope") != "selection":
        ids = []
    elif not ids:
        return render(
            request,
            "error.html",
            {"title": "Nothing selected", "message": "select entries first"},
            400,
        )
    try:
        offset = _offset(form.get("offset"))
        report = await data.dlq_action(request.app, name, str(action), flt, ids[:MAX_BATCH], offset)
    except BrokerError as exc:
        return _unavailable(request, exc)
    scope = f"{len(ids)} selected" if ids else "the filter"
    return render(
        request, "report.html", {"report": report, "scope": scope, "title": f"DLQ of {name}"}
    )


async def cancel(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    try:
        answer = await data.cancel(request.app, job_id)
    except BrokerError as exc:
        return _unavailable(request, exc)
    if answer is None:
        message = "cancellation is not available in this build"
        return render(request, "error.html", {"title": "Not available", "message": message}, 501)
    raise web.HTTPSeeOther(f"/ui/jobs/{job_id}")


async def rollback(request: web.Request) -> web.Response:
    form = await request.post()
    raw = form.get("version")
    if not is_number(raw, 18) or not isinstance(raw, str):
        return render(request, "error.html", {"title": "Bad request", "message": "no version"}, 400)
    try:
        before = await data.rollback(request.app, int(raw))
    except DeployError as exc:
        return render(request, "error.html", {"title": "Refused", "message": str(exc)[:500]}, 409)
    except BrokerError as exc:
        return _unavailable(request, exc)
    was = "" if before is None else str(before)
    raise web.HTTPSeeOther(f"/ui/deployments?activated={int(raw)}&was={was}")
