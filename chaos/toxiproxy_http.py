"""A small blocking client for the Toxiproxy v2 HTTP API, for what toxiproxy-python 0.1.1
cannot do: update a toxic in place (PATCH), read one proxy, populate, and set timeouts.

Every request has a timeout and sends ``Content-Type: application/json``, as the official
Go client does. Errors become ``ToxiproxyError`` with the server's status and message.
Attributes must be integers: the real server answers ``100.0`` with a 400, so this client
refuses floats before sending rather than pass locally and fail against Toxiproxy.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_TIMEOUT_S = 5.0


class ToxiproxyError(Exception):
    """A non-2xx answer: ``status`` and the ``error`` text of the body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        # Error bodies are JSON even though the real server labels them text/plain.
        return json.loads(self.body) if self.body.strip() else None


class ToxiproxyHttp:
    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"expected an http://host:port URL, got {url!r}")
        self.url = url.rstrip("/")
        self.host = parsed.hostname
        self.port = parsed.port or 8474
        self.timeout_s = timeout_s

    # -- raw -----------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None) -> Reply:
        """One request; ``body`` is JSON-encoded unless it is ``bytes`` or ``None``."""
        payload = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            connection.request(
                method, path, body=payload, headers={"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            return Reply(response.status, dict(response.getheaders()), response.read())
        finally:
            connection.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        reply = self.request(method, path, body)
        if reply.status >= 300:
            try:
                message = str(reply.json()["error"])
            except (ValueError, KeyError, TypeError):
                message = reply.body.decode(errors="replace").strip()
            raise ToxiproxyError(reply.status, message)
        return reply.json()

    # -- proxies -------------------------------------------------------------------------

    def version(self) -> str:
        reply = self.request("GET", "/version")
        text = reply.body.decode(errors="replace").strip()
        try:
            return str(json.loads(text)["version"])
        except (ValueError, KeyError, TypeError):
            return text  # servers before 2.6 answered the bare version string

    def proxies(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/proxies")
        return result

    def get_proxy(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/proxies/{_quote(name)}")
        return result

    def create_proxy(
        self, name: str, upstream: str, listen: str = "127.0.0.1:0", *, enabled: bool = True
    ) -> dict[str, Any]:
        body = {"name": name, "upstream": upstream, "listen": listen, "enabled": enabled}
        result: dict[str, Any] = self._call("POST", "/proxies", body)
        return result

    def update_proxy(self, name: str, **fields: Any) -> dict[str, Any]:
        """``listen``, ``upstream`` and/or ``enabled``; others keep their values."""
        result: dict[str, Any] = self._call("POST", f"/proxies/{_quote(name)}", fields)
        return result

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{_quote(name)}")

    def delete_all_proxies(self) -> None:
        for name in self.proxies():
            self.delete_proxy(name)

    def populate(self, proxies: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        result = self._call("POST", "/populate", list(proxies))
        return list(result["proxies"] or [])

    def reset(self) -> None:
        self._call("POST", "/reset")

    # -- toxics --------------------------------------------------------------------------

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", f"/proxies/{_quote(proxy)}/toxics")
        return result

    def add_toxic(
        self,
        proxy: str,
        toxic_type: str,
        *,
        stream: str = "downstream",
        name: str | None = None,
        toxicity: float = 1.0,
        attributes: Mapping[str, int] | None = None,
    ) -> dict[str, Any]:
        body = {
            "name": name or f"{toxic_type}_{stream}",
            "type": toxic_type,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": _integer_attributes(attributes or {}),
        }
        result: dict[str, Any] = self._call("POST", f"/proxies/{_quote(proxy)}/toxics", body)
        return result

    def update_toxic(
        self,
        proxy: str,
        name: str,
        *,
        attributes: Mapping[str, int] | None = None,
        toxicity: float | None = None,
    ) -> dict[str, Any]:
        """PATCH: only the attributes given change; toxicity only when given."""
        body: dict[str, Any] = {"attributes": _integer_attributes(attributes or {})}
        if toxicity is not None:
            body["toxicity"] = toxicity
        path = f"/proxies/{_quote(proxy)}/toxics/{_quote(name)}"
        result: dict[str, Any] = self._call("PATCH", path, body)
        return result

    def delete_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{_quote(proxy)}/toxics/{_quote(name)}")


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _integer_attributes(attributes: Mapping[str, int]) -> dict[str, int]:
    for key, value in attributes.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(
                f"toxic attribute {key!r} must be an int, got {value!r}: "
                "Toxiproxy rejects non-integral numbers with 400"
            )
    return dict(attributes)
