"""How a /v1 call is answered: :class:`ApiError`, raised anywhere in a handler for any
answer other than success, and the JSON responses (``{"error": {"code", "message"}}``
for errors) that every /v1 route and middleware sends.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

_json = msgspec.json.Encoder()


class ApiError(Exception):
    """An answer other than success, raised anywhere in a handler."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        close: bool = False,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.close = close  # end the connection after answering (a body left unread)
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
    response = json_response(body, err.status, err.headers)
    if err.close:
        response.force_close()
    return response
