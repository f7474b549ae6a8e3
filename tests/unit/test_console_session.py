"""The console's session cookie, CSRF token and sign-in redirect: total parsers of what
a browser sends."""

from __future__ import annotations

import pytest

from runtime.server.console.session import csrf_token, new_session, safe_next, session_nonce

TOKEN = "the-api-token"
DAY_S = 86_400.0


def test_a_session_cookie_is_accepted_until_it_expires() -> None:
    cookie = new_session(TOKEN, 1_000_000)
    nonce = session_nonce(TOKEN, cookie, 1_000_000 + 10, DAY_S)
    assert nonce is not None and len(nonce) == 32
    assert session_nonce(TOKEN, cookie, 1_000_000 + DAY_S + 1, DAY_S) is None
    assert session_nonce(TOKEN, cookie, 1_000_000 - 5, DAY_S) is None  # issued in the future
    assert session_nonce("another-token", cookie, 1_000_000, DAY_S) is None


@pytest.mark.parametrize(
    "cookie",
    [None, "", "x", "1.2", "1.2.3", "a.b.c", "..", "1000000..", "1000000.n." + "0" * 64,
     "9" * 300, "1000000.n.é", "²³.n.mac", "１２.n.mac"],
)  # fmt: skip
def test_anything_else_is_no_session(cookie: str | None) -> None:
    assert session_nonce(TOKEN, cookie, 1_000_000, DAY_S) is None


def test_a_tampered_issue_time_is_refused() -> None:
    issued, nonce, mac = new_session(TOKEN, 1_000_000).split(".")
    assert session_nonce(TOKEN, f"{int(issued) + 1}.{nonce}.{mac}", 1_000_001, DAY_S) is None


def test_csrf_tokens_differ_per_session_and_per_token() -> None:
    assert csrf_token(TOKEN, "a") != csrf_token(TOKEN, "b")
    assert csrf_token(TOKEN, "a") != csrf_token("other", "a")
    assert csrf_token(TOKEN, "a") == csrf_token(TOKEN, "a")


@pytest.mark.parametrize(
    ("given", "expected"),
    [("/ui/dlq/f?page=2", "/ui/dlq/f?page=2"), ("/ui", "/ui"), ("/ui?q=a", "/ui?q=a"),
     ("//evil.example/ui", "/ui"), ("/ui//evil.example", "/ui"), ("https://evil/ui", "/ui"),
     ("/uix", "/ui"), ("/ui/\\evil", "/ui"), ("/ui/a\nb", "/ui"), (None, "/ui"), (3, "/ui")],
)  # fmt: skip
def test_after_sign_in_only_console_paths(given: object, expected: str) -> None:
    assert safe_next(given) == expected


def test_a_session_issued_at_a_unicode_digit_is_refused_not_raised() -> None:
    """ "²".isdigit() is True but int("²") raises: a forged cookie with a valid-looking MAC
    position must still be a refusal."""
    from runtime.server.console.session import is_number

    assert not is_number("²", 5) and not is_number("１２", 5) and not is_number("", 5)
    assert is_number("12", 5) and not is_number("123456", 5)
