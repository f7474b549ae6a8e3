"""Secret masking: URL passwords, and the values of keys that look like passwords or
tokens, are masked in every configuration error message and in ``runtime config show``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from runtime.config.schema import Key, Settings

_SECRET_NAME = re.compile(
    r"pass(word)?|secret|token|api_?key|signing_?key|credential|private|headers", re.I
)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.I)


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
        return redact_url(value) if "://" in value or "@" in value else value
    return value


def settings_to_dict(settings: Settings, *, masked: bool = True) -> dict[str, Any]:
    """Plain builtins for ``runtime config show``; secrets masked unless ``masked=False``."""
    data: dict[str, Any] = msgspec.to_builtins(settings)
    return mask((), data) if masked else data
