"""Part B: every method of the unmodified toxiproxy-python 0.1.1 client against the target,
each call bounded (the client sets no timeouts); then the same scenarios as the official Go
client shapes them (POST to save a proxy, PATCH to update a toxic, JSON content type on
every request, GET included)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists
from toxiproxy.proxy import Proxy

from chaos.proxy.probes import WAIT_S, bounded, can_connect
from chaos.proxy.testing import Target, port_of


@pytest.fixture
def client(toxiproxy: Target) -> Iterator[Toxiproxy]:
    """The client pointed at the target (its host and port are global class state)."""
    saved = (APIConsumer.host, APIConsumer.port)
    server = Toxiproxy()
    server.update_api_consumer(*toxiproxy.api_host_port)
    try:
        yield server
    finally:
        APIConsumer.host, APIConsumer.port = saved


def reachable(target: Target, proxy: Proxy) -> bool:
    return can_connect(target.proxy_host, port_of(proxy.listen))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_create_echoes_everything(client: Toxiproxy, toxiproxy: Target) -> None:
    listen = toxiproxy.listen(free_port())
    proxy = bounded(client.create, "127.0.0.1:6379", "echo", listen=listen, enabled=False)
    assert (proxy.name, proxy.upstream, proxy.listen, proxy.enabled) == (
        "echo",
        "127.0.0.1:6379",
        listen,
        False,
    )
    assert not reachable(toxiproxy, proxy)


def test_disable_and_enable_keep_listen_and_toxics(client: Toxiproxy, toxiproxy: Target) -> None:
    proxy = bounded(client.create, "127.0.0.1:1", "flip", listen=toxiproxy.listen())
    bounded(proxy.add_toxic, type="latency", attributes={"latency": 10})
    assert reachable(toxiproxy, proxy)
    bounded(proxy.disable)
    assert proxy.enabled is False
    assert not reachable(toxiproxy, proxy)
    bounded(proxy.enable)
    assert reachable(toxiproxy, proxy)
    assert bounded(client.get_proxy, "flip").listen == proxy.listen
    assert list(bounded(proxy.toxics)) == ["latency_downstream"]


def test_down_context_restores(client: Toxiproxy, toxiproxy: Target) -> None:
    proxy = bounded(client.create, "127.0.0.1:1", "down", listen=toxiproxy.listen())

    def go_down() -> bool:
        with proxy.down():
            return reachable(toxiproxy, proxy)

    assert bounded(go_down) is False
    assert reachable(toxiproxy, proxy)


def test_toxic_methods(client: Toxiproxy, toxiproxy: Target) -> None:
    proxy = bounded(client.create, "127.0.0.1:1", "tox", listen=toxiproxy.listen())
    assert bounded(proxy.add_toxic, type="latency", attributes={"latency": 5}) is None
    bounded(proxy.add_toxic, type="timeout", stream="upstream", name="t", toxicity=0.5)
    toxics = bounded(proxy.toxics)
    assert sorted(toxics) == ["latency_downstream", "t"]
    toxic = bounded(proxy.get_toxic, "t")
    assert (toxic.type, toxic.stream, toxic.toxicity, toxic.attributes) == (
        "timeout",
        "upstream",
        0.5,
        {"timeout": 0},
    )
    assert bounded(proxy.get_toxic, "missing") is None
    with pytest.raises(ProxyExists):  # the client's name for a 409 on a toxic
        bounded(proxy.add_toxic, type="noop", name="t")
    with pytest.raises(InvalidToxic):
        bounded(proxy.add_toxic, type="latency", name="f", attributes={"latency": 100.0})
    assert bounded(proxy.destroy_toxic, "t") is True
    with pytest.raises(NotFound):
        bounded(proxy.destroy_toxic, "t")
    assert list(bounded(proxy.toxics)) == ["latency_downstream"]


def test_reset_enables_and_clears(client: Toxiproxy, toxiproxy: Target) -> None:
    proxy = bounded(client.create, "127.0.0.1:1", "rst", listen=toxiproxy.listen())
    bounded(proxy.add_toxic, type="latency", attributes={"latency": 5})
    bounded(proxy.disable)
    assert bounded(client.reset) is True
    assert bounded(client.get_proxy, "rst").enabled is True
    assert bounded(proxy.toxics) == {}
    assert reachable(toxiproxy, proxy)


def test_populate_leaves_proxies_reachable(client: Toxiproxy, toxiproxy: Target) -> None:
    items = [
        {"name": f"pop{i}", "upstream": "127.0.0.1:1", "listen": toxiproxy.listen(free_port())}
        for i in range(2)
    ]
    created = bounded(client.populate, items)
    assert sorted(proxy.name for proxy in created) == ["pop0", "pop1"]
    for proxy in created:
        assert reachable(toxiproxy, proxy)
    # Same listen (already numeric) and upstream: the client keeps them.
    assert bounded(client.populate, items) == []


def test_duplicates_and_destroy(client: Toxiproxy, toxiproxy: Target) -> None:
    proxy = bounded(client.create, "127.0.0.1:1", "dup", listen=toxiproxy.listen())
    with pytest.raises(ProxyExists):
        bounded(client.create, "127.0.0.1:1", "dup", listen=toxiproxy.listen())
    assert bounded(client.destroy, "dup") is False  # only Proxy objects are destroyed
    assert "dup" in bounded(client.proxies)
    assert bounded(client.destroy, proxy) is True
    assert bounded(client.get_proxy, "dup") is None
    with pytest.raises(NotFound):
        bounded(proxy.destroy)


def test_destroy_all(client: Toxiproxy, toxiproxy: Target) -> None:
    for name in ("a", "b", "c"):
        bounded(client.create, "127.0.0.1:1", name, listen=toxiproxy.listen())
    assert sorted(bounded(client.proxies)) == ["a", "b", "c"]
    bounded(client.destroy_all)
    assert bounded(client.proxies) == {}


def test_running_and_version(client: Toxiproxy, toxiproxy: Target) -> None:
    assert bounded(client.running) is True
    version = bounded(client.version)
    assert isinstance(version, bytes)
    assert b'"version"' in version
    if not toxiproxy.is_real:
        assert version == b'{"version": "2.12.0"}\n'
    client.update_api_consumer("127.0.0.1", free_port())
    assert bounded(client.running) is False
    assert bounded(client.version) is None


def test_go_client_shaped_requests(toxiproxy: Target, sockets: Any, upstream: Any) -> None:
    """POST /proxies, POST /proxies/{p} with the whole proxy (``Save``), toxic add, PATCH
    toxic, delete; Content-Type: application/json on every request."""
    session = requests.Session()
    session.headers["Content-Type"] = "application/json"
    url = toxiproxy.url

    def call(method: str, path: str, body: Any = None) -> requests.Response:
        return session.request(method, url + path, json=body, timeout=WAIT_S)

    try:
        assert call("GET", "/version").status_code == 200
        body = {"name": "go", "listen": toxiproxy.listen(), "upstream": "127.0.0.1:1"}
        created = call("POST", "/proxies", {**body, "enabled": True})
        assert created.status_code == 201
        saved = call(
            "POST",
            "/proxies/go",
            {**created.json(), "upstream": toxiproxy.upstream(upstream.port)},
        )
        assert saved.status_code == 200
        assert saved.json()["upstream"] == toxiproxy.upstream(upstream.port)
        client = sockets.connect(toxiproxy.proxy_host, port_of(saved.json()["listen"]))
        server = upstream.accept()
        toxic = {"name": "lat", "type": "latency", "stream": "upstream", "toxicity": 1.0}
        added = call("POST", "/proxies/go/toxics", {**toxic, "attributes": {"latency": 1}})
        assert added.status_code == 200
        patched = call("PATCH", "/proxies/go/toxics/lat", {"attributes": {"jitter": 1}})
        assert patched.json()["attributes"] == {"latency": 1, "jitter": 1}
        assert call("GET", "/proxies/go/toxics/lat").json() == patched.json()
        client.sendall(b"ping")
        assert server.recv(16) == b"ping"
        assert call("DELETE", "/proxies/go/toxics/lat").status_code == 204
        assert call("GET", "/proxies/go").json()["toxics"] == []
        assert call("DELETE", "/proxies/go").status_code == 204
    finally:
        session.close()
