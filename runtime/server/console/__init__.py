"""The web console at ``/ui`` of ``runtime serve``: server-rendered pages (jinja2,
autoescaped) over the runtime's own readers, one small script of ours for live updates,
nothing loaded from another origin.

Layers, each importing only those above it: ``session`` (sign-in cookie, CSRF, security
headers) → ``data`` (what the pages show, bounded reads; the adapters for run history,
cancellation and progress) → ``pages`` (handlers) → this module (routes, sign-in).
"""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from runtime.jobs.records import iso_ms
from runtime.server.appkeys import TOKEN_KEY
from runtime.server.console import pages
from runtime.server.console.session import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    new_session,
    refused,
    safe_next,
    secured,
    set_cookie,
    signed_in,
)

HERE = Path(__file__).parent
MAX_FORM_BYTES = 65_536

__all__ = ["add_console"]


async def signin_form(request: web.Request) -> web.StreamResponse:
    import secrets

    value = request.cookies.get(LOGIN_COOKIE, "")
    if not (0 < len(value) <= 64 and value.isalnum()):
        value = secrets.token_hex(16)
    context = {
        "title": "Sign in",
        "csrf": value,
        "csrf_field": CSRF_FIELD,
        "next": safe_next(request.query.get("next")),
        "error": False,
    }
    response = aiohttp_jinja2.render_template("signin.html", request, context)
    set_cookie(request, response, LOGIN_COOKIE, value)
    return response


async def signin(request: web.Request) -> web.StreamResponse:
    import hmac

    from runtime.server.console.session import is_token

    form = await request.post()
    given, expected = form.get(CSRF_FIELD), request.cookies.get(LOGIN_COOKIE, "")
    if not isinstance(given, str) or not expected:
        return refused("missing or wrong CSRF token: reload the sign-in page")
    if not hmac.compare_digest(given.encode(), expected.encode()):  # bytes: any text compares
        return refused("missing or wrong CSRF token: reload the sign-in page")
    token = form.get("token")
    target = safe_next(form.get("next"))
    if not isinstance(token, str) or not is_token(request, token):
        context = {"title": "Sign in", "csrf": expected, "csrf_field": CSRF_FIELD,
                   "next": target, "error": True}  # fmt: skip
        return aiohttp_jinja2.render_template("signin.html", request, context, status=401)
    response = see_other(target)
    session = new_session(request.config_dict[TOKEN_KEY], time.time())
    set_cookie(request, response, SESSION_COOKIE, session)
    response.del_cookie(LOGIN_COOKIE, path="/ui")
    return response


async def signout(request: web.Request) -> web.StreamResponse:
    response = see_other("/ui/signin")
    response.del_cookie(SESSION_COOKIE, path="/ui")
    return response


def see_other(location: str) -> web.Response:
    """A redirect as a plain answer, so cookies can be set on it."""
    return web.Response(status=303, headers={"Location": location})


async def _secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == "/ui" or request.path.startswith("/ui/"):
        secured(response)


def add_console(app: web.Application) -> None:
    """The console's routes and its template environment (autoescape on)."""
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["iso"] = iso_ms
    app.on_response_prepare.append(_secure_headers)
    r = app.router
    r.add_get("/ui/signin", signin_form)
    r.add_post("/ui/signin", signin)
    r.add_post("/ui/signout", signed_in(signout))
    r.add_get("/ui", signed_in(pages.overview))
    r.add_get("/ui/fleet", signed_in(pages.fleet))
    r.add_get("/ui/functions/{name}", signed_in(pages.function))
    r.add_get("/ui/jobs/{job_id}", signed_in(pages.job))
    r.add_post("/ui/jobs/{job_id}/cancel", signed_in(pages.cancel))
    r.add_get("/ui/dlq/{name}", signed_in(pages.dlq))
    r.add_post("/ui/dlq/{name}", signed_in(pages.dlq_action))
    r.add_get("/ui/deployments", signed_in(pages.deployments))
    r.add_post("/ui/deployments/rollback", signed_in(pages.rollback))
    r.add_static("/ui/static", HERE / "static", append_version=False)
