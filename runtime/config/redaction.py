"""Secret masking: URL passwords, and the values of keys that look like passwords or
tokens, are masked in every configuration error message and in ``runtime config show``;
``redact_text`` masks the URL passwords inside free text (the errors of a Redis call).

A Redis URL carries a password in two places, and both are masked in every form the
runtime meets: the userinfo (``redis://user:pw@``, ``rediss://:pw@``, ``unix://u:pw@/s``,
a bare ``user:pw@host:port``) and the query (``?password=``, ``&password=``, in any case,
with or without a scheme, e.g. ``db.internal:6379?password=pw``). A username alone
(``redis://user@host``) is not a secret and stays visible.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from runtime.config.schema import Key, Settings

_SECRET_NAME = re.compile(
    r"pass(word)?|secret|token|api_?key|signing_?key|verify_?keys?|credential|private|headers", re.I
)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#\s'\"]*", re.I)
# In free text: the userinfo of a URL-like word, up to its *last* "@" (a password may hold
# "@" or "/"): an optional scheme, a user with no ":@/" or space, ":", then the password.
_TEXT_USERINFO = re.compile(r"((?:[a-z][a-z0-9+.-]*://)?[^\s:@/'\"]*:)[^\s'\"]*@", re.I)


def redact_url(url: str) -> str:
    """``redis://user:pw@host:6379/0`` becomes ``redis://user:**@host:6379/0``.

    Splits at the *last* ``@`` so a password holding ``@`` or ``/`` is still masked
    (over-masking a strange URL is better than printing a secret).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.partition(':')[0]}:**@{host}"
    return scheme + sep + _QUERY_PASSWORD.sub(r"\1**", rest)


def mask(key: Key, value: Any) -> Any:
    """``value`` of ``key`` with every secret in it masked, tables and lists included."""
    if isinstance(value, Mapping):
        return {k: mask((*key, str(k)), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(key, v) for v in value]
    if key and _SECRET_NAME.search(key[-1]) and value not in ("", None, False):
        return "**"  # whatever its type: `token = 424242` is a secret too
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_text(text: str) -> str:
    """``text`` with the password of every Redis URL in it masked (see the module
    docstring); text that holds none comes back unchanged."""
    if "@" in text:
        text = _TEXT_USERINFO.sub(r"\1**@", text)
    return _QUERY_PASSWORD.sub(r"\1**", text)


def settings_to_dict(settings: Settings, *, masked: bool = True) -> dict[str, Any]:
    """Plain builtins for ``runtime config show``; secrets masked unless ``masked=False``."""
    data: dict[str, Any] = msgspec.to_builtins(settings)
    return mask((), data) if masked else data
