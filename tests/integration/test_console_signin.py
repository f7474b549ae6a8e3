"""The console's sign-in and its refusals over HTTP, on an application with the console's
routes only (no Redis: nothing here gets past the session check)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from runtime.config.schema import Settings
from runtime.server.appkeys import SETTINGS_KEY, TOKEN_KEY
from runtime.server.console import add_console
from runtime.server.console.session import CSP

pytestmark = pytest.mark.integration
TOKEN = "sign-in-test-token"


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    app[SETTINGS_KEY] = Settings()
    app[TOKEN_KEY] = TOKEN
    add_console(app)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def login_csrf(client: TestClient[web.Request, web.Application]) -> str:
    response = await client.get("/ui/signin?next=/ui/dlq/f")
    assert response.status == 200
    assert response.headers["Content-Security-Policy"] == CSP
    assert response.headers["X-Frame-Options"] == "DENY"
    found = re.search(r'name="csrf" value="([^"]+)"', await response.text())
    assert found is not None
    return found[1]


async def test_a_page_without_a_session_goes_to_the_sign_in_form(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/ui/dlq/f?page=2&reason=a", allow_redirects=False)
    assert response.status == 303
    location = URL(response.headers["Location"])
    assert location.path == "/ui/signin" and location.query["next"] == "/ui/dlq/f?page=2&reason=a"
    assert response.headers["Content-Security-Policy"] == CSP
    response = await client.post("/ui/dlq/f", data={"csrf": "x"}, allow_redirects=False)
    assert response.status == 401


async def test_sign_in_sets_a_strict_http_only_cookie(
    client: TestClient[web.Request, web.Application],
) -> None:
    csrf = await login_csrf(client)
    response = await client.post(
        "/ui/signin",
        data={"csrf": csrf, "token": TOKEN, "next": "/ui/dlq/f"},
        allow_redirects=False,
    )
    assert response.status == 303 and response.headers["Location"] == "/ui/dlq/f"
    cookie = response.cookies["rt_console"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/ui"
    assert not cookie["secure"]  # plain HTTP here; set when served over TLS


async def test_a_wrong_token_and_a_bad_csrf_are_refused(
    client: TestClient[web.Request, web.Application],
) -> None:
    csrf = await login_csrf(client)
    response = await client.post("/ui/signin", data={"csrf": csrf, "token": "nope"})
    assert response.status == 401 and "Wrong token" in await response.text()
    assert "rt_console" not in response.cookies
    for given in ({}, {"csrf": "0" * 32}, {"csrf": "é"}):  # "é": compare_digest on str raised
        response = await client.post("/ui/signin", data={**given, "token": TOKEN})
        assert response.status == 403, given
        assert "rt_console" not in response.cookies


async def test_an_open_redirect_is_not_offered(
    client: TestClient[web.Request, web.Application],
) -> None:
    csrf = await login_csrf(client)
    response = await client.post(
        "/ui/signin",
        data={"csrf": csrf, "token": TOKEN, "next": "//evil.example/"},
        allow_redirects=False,
    )
    assert response.status == 303 and response.headers["Location"] == "/ui"
