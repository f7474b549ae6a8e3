"""Every exception the proxy raises or understands, in one tree.

    Exception
    └── ProxyFailure                 root of the proxy's own errors
        ├── ApiError                 an HTTP error with Toxiproxy's exact status and message
        │   ├── BadRequest           400: bad body, missing field, bad stream or toxic type
        │   ├── NotFound             404: ``proxy not found`` / ``toxic not found``
        │   ├── Conflict             409: ``proxy already exists`` / ``toxic already exists``
        │   └── ServerError          500: anything else, with the Go-style error text
        │       └── ListenError      a listener that cannot be resolved or bound
        ├── PopulateFailed           /populate stopped at an item; carries the proxies done
        └── ConfigError              a ``--config`` file that cannot be loaded (exit status 2)

The API layer turns an ``ApiError`` into Go's ``http.Error`` body in one place; every other
layer only raises. ``ListenError`` is a ``ServerError`` because the real server answers a
failed bind with 500 and the raw ``listen tcp ...`` text.
"""

from __future__ import annotations

from typing import Any


class ProxyFailure(Exception):
    """Root of the proxy's own errors."""


class ApiError(ProxyFailure):
    """An error the HTTP API reports as ``{"error": message, "status": status}``."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    status = 400


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class ServerError(ApiError):
    status = 500


class ListenError(ServerError):
    """A listen address that does not parse, resolve or bind (Go's ``listen tcp`` text)."""


class PopulateFailed(ProxyFailure):
    """An item of ``/populate`` failed; the items before it stay created."""

    def __init__(self, cause: ApiError, proxies: list[dict[str, Any]]) -> None:
        super().__init__(cause.message)
        self.cause = cause
        self.proxies = proxies


class ConfigError(ProxyFailure):
    """The start-up config file is unreadable or invalid; the message names the file."""


PROXY_NOT_FOUND = "proxy not found"
TOXIC_NOT_FOUND = "toxic not found"
PROXY_EXISTS = "proxy already exists"
TOXIC_EXISTS = "toxic already exists"
INVALID_STREAM = "stream was invalid, can be either upstream or downstream"
INVALID_TOXIC_TYPE = "invalid toxic type"
