"""Fixtures for the proxy suites.

``target`` is the server under test, and every test that takes it runs twice: against
``chaos`` (our proxy, in a background thread for the whole session) and against ``real``
(a real Toxiproxy named by ``TOXIPROXY_URL``, see ``chaos.proxy.testing``), which is
skipped when that variable is unset. ``toxiproxy`` is the target emptied of proxies before
and after the test; sockets opened through ``sockets``/``upstream`` close at its end.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from chaos.proxy.probes import WAIT_S, SocketBag, Upstream
from chaos.proxy.testing import Target, port_of, real_target_from_env, server_in_thread


@pytest.fixture(scope="session")
def chaos_url() -> Iterator[str]:
    """Our proxy server for the whole session."""
    with server_in_thread() as url:
        yield url


@pytest.fixture(
    scope="session",
    params=["chaos", pytest.param("real", marks=pytest.mark.real_toxiproxy)],
)
def target(request: pytest.FixtureRequest) -> Target:
    if request.param == "real":
        real = real_target_from_env()
        if real is None:
            pytest.skip("TOXIPROXY_URL is not set: no real Toxiproxy to run against")
        return real
    return Target("chaos", request.getfixturevalue("chaos_url"))


@pytest.fixture
def toxiproxy(target: Target) -> Iterator[Target]:
    target.api.delete_all_proxies()
    yield target
    target.api.delete_all_proxies()


@pytest.fixture
def sockets() -> Iterator[SocketBag]:
    bag = SocketBag()
    yield bag
    bag.close()


@pytest.fixture
def upstream(sockets: SocketBag, target: Target) -> Upstream:
    return Upstream(sockets, target.upstream_bind_host)


@dataclass
class Pair:
    """One proxied connection: the client end and the accepted upstream end."""

    client: socket.socket
    server: socket.socket


@pytest.fixture
def make_proxy(toxiproxy: Target, upstream: Upstream) -> Callable[..., dict[str, Any]]:
    """Create a proxy in front of ``upstream`` (unless told otherwise); returns its JSON."""

    def create(name: str = "test", **fields: Any) -> dict[str, Any]:
        fields.setdefault("listen", toxiproxy.listen())
        fields.setdefault("upstream", toxiproxy.upstream(upstream.port))
        return toxiproxy.api.create_proxy(name, **fields)

    return create


@pytest.fixture
def connect(target: Target, sockets: SocketBag) -> Callable[[dict[str, Any]], socket.socket]:
    """Open a client socket to a proxy (given as its JSON)."""
    return lambda proxy: sockets.connect(target.proxy_host, port_of(proxy["listen"]))


@pytest.fixture
def connect_pair(
    connect: Callable[[dict[str, Any]], socket.socket], upstream: Upstream
) -> Callable[[dict[str, Any]], Pair]:
    """Open a client connection through a proxy and accept its upstream side."""
    return lambda proxy: Pair(connect(proxy), upstream.accept())


class Http:
    """Raw HTTP against the target's API (status codes, headers and bodies as sent)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", WAIT_S)
        return requests.request(method, self.url + path, **kwargs)


@pytest.fixture
def http(toxiproxy: Target) -> Http:
    return Http(toxiproxy.url)
