"""Who may use the console, and the headers every console answer carries.

Signing in takes the API token (``http.token``, the one the ``/v1`` routes need, compared
in constant time) and sets a session cookie: ``<issued s>.<nonce>.<HMAC(token, issued.nonce)>``,
HttpOnly, SameSite=Strict, Secure over TLS, path ``/ui``, for ``ui.session_s``. Nothing
is stored server-side: every instance holding the same token accepts the cookie, and a new
token signs every session out.

Every action is a form POST that carries a CSRF token, ``HMAC(token, "csrf:" + nonce)``
of the session's nonce; the sign-in form (no session yet) uses a double-submit cookie.
A POST without a matching token is refused (403) before it reads anything else.

Every console answer has a strict Content-Security-Policy (``default-src 'self'``, no
inline script or style, no frames, forms only to this origin), ``no-store`` caching,
``nosniff`` and ``no-referrer``: the console loads nothing from another origin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from runtime.server.appkeys import SETTINGS_KEY, TOKEN_KEY

SESSION_COOKIE = "rt_console"
LOGIN_COOKIE = "rt_console_login"  # the sign-in form's double-submit CSRF value
CSRF_FIELD = "csrf"
MAX_COOKIE_CHARS = 200
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
Page = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _mac(token: str, message: str) -> str:
    return hmac.new(token.encode(), message.encode(), hashlib.sha256).hexdigest()


def new_session(token: str, now_s: float) -> str:
    body = f"{int(now_s)}.{secrets.token_hex(16)}"
    return f"{body}.{_mac(token, 'session:' + body)}"


def session_nonce(token: str, cookie: str | None, now_s: float, lifetime_s: float) -> str | None:
    """The nonce of a valid, unexpired session cookie; None for anything else (a total
    parser: the cookie comes from the browser)."""
    if not cookie or len(cookie) > MAX_COOKIE_CHARS:
        return None
    issued, _, rest = cookie.partition(".")
    nonce, _, mac = rest.partition(".")
    if not is_number(issued, 12) or not nonce or not mac:
        return None
    if not hmac.compare_digest(mac.encode(), _mac(token, f"session:{issued}.{nonce}").encode()):
        return None
    if not 0 <= now_s - int(issued) <= lifetime_s:
        return None
    return nonce


def is_number(raw: object, max_digits: int) -> bool:
    """A non-negative decimal integer of at most ``max_digits`` ASCII digits ("²" is a
    digit to ``str.isdigit`` but not to ``int``)."""
    return isinstance(raw, str) and 0 < len(raw) <= max_digits and raw.isascii() and raw.isdigit()


def csrf_token(token: str, nonce: str) -> str:
    return _mac(token, "csrf:" + nonce)


def is_signed_in(request: web.Request) -> str | None:
    """The session's nonce when the request carries a valid session cookie."""
    settings = request.config_dict[SETTINGS_KEY]
    return session_nonce(
        request.config_dict[TOKEN_KEY],
        request.cookies.get(SESSION_COOKIE),
        time.time(),
        settings.ui.session_s,
    )


def is_token(request: web.Request, given: str) -> bool:
    expected = request.config_dict[TOKEN_KEY].encode()
    return hmac.compare_digest(given.strip().encode(), expected)


def is_csrf_ok(request: web.Request, nonce: str, given: object) -> bool:
    if not isinstance(given, str) or len(given) > MAX_COOKIE_CHARS:
        return False
    expected = csrf_token(request.config_dict[TOKEN_KEY], nonce)
    return hmac.compare_digest(given.encode(), expected.encode())


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        path="/ui",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        max_age=int(request.config_dict[SETTINGS_KEY].ui.session_s),
    )


def secured(response: web.StreamResponse) -> web.StreamResponse:
    response.headers.update(SECURITY_HEADERS)
    return response


def refused(message: str, status: int = 403) -> web.Response:
    """A plain-text refusal (a CSRF failure is not worth a page)."""
    response = web.Response(status=status, text=message + "\n")
    secured(response)
    return response


def signed_in(page: Page) -> Page:
    """A page that needs a session: without one, GETs go to the sign-in form (and come
    back), other methods are refused; a POST also needs its CSRF token."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        nonce = is_signed_in(request)
        if nonce is None:
            if request.method == "GET":
                raise web.HTTPSeeOther(f"/ui/signin?next={_quote_next(request.path_qs)}")
            return refused("not signed in", 401)
        if request.method == "POST":
            form = await request.post()
            if not is_csrf_ok(request, nonce, form.get(CSRF_FIELD)):
                return refused("missing or wrong CSRF token: reload the page and try again")
        request["console_csrf"] = csrf_token(request.config_dict[TOKEN_KEY], nonce)
        return secured(await page(request))

    return guarded


def _quote_next(path: str) -> str:
    return quote(path, safe="")


def safe_next(raw: object) -> str:
    """Where to go after signing in: only a console path (no open redirect)."""
    if not isinstance(raw, str) or len(raw) >= 2000 or "\\" in raw or "\n" in raw:
        return "/ui"
    is_ui = raw == "/ui" or (raw.startswith(("/ui/", "/ui?")) and not raw.startswith("/ui//"))
    return raw if is_ui else "/ui"
