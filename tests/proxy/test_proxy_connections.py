"""Part C, proxy level: the data path around toxics (mirrors ``toxiproxy_test.go``): a down
upstream, disable/enable, re-addressing, delete and reset on live connections."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from chaos.proxy.probes import (
    SocketBag,
    Upstream,
    can_connect,
    recv_exactly,
    seconds_until_closed,
)
from chaos.proxy.testing import Target, port_of

Proxy = dict[str, Any]
MakeProxy = Callable[..., Proxy]
ConnectPair = Callable[[Proxy], Any]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_flows(pair: Any) -> None:
    pair.client.sendall(b"ping")
    assert recv_exactly(pair.server, 4) == b"ping"
    pair.server.sendall(b"pong")
    assert recv_exactly(pair.client, 4) == b"pong"


def test_down_upstream_accepts_then_closes(
    toxiproxy: Target, make_proxy: MakeProxy, connect: Callable[[Proxy], socket.socket]
) -> None:
    proxy = make_proxy(upstream=toxiproxy.upstream(free_port()))
    started = time.monotonic()
    client = connect(proxy)  # the connect itself succeeds
    client.settimeout(2.0)
    assert client.recv(16) == b""  # EOF, not a reset
    assert time.monotonic() - started < 0.5


def test_disable_closes_connections_and_refuses_new_ones(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair
) -> None:
    proxy = make_proxy()
    pair = connect_pair(proxy)
    assert_flows(pair)
    toxiproxy.api.add_toxic("test", "latency", attributes={"latency": 1})
    assert toxiproxy.api.update_proxy("test", enabled=False)["enabled"] is False
    assert seconds_until_closed(pair.client, timeout_s=2.0) < 1.0
    assert seconds_until_closed(pair.server, timeout_s=2.0) < 1.0
    assert not can_connect(toxiproxy.proxy_host, port_of(proxy["listen"]))
    # Enabling binds the same port again, and the toxics are still there.
    enabled = toxiproxy.api.update_proxy("test", enabled=True)
    assert port_of(enabled["listen"]) == port_of(proxy["listen"])
    assert [toxic["name"] for toxic in enabled["toxics"]] == ["latency_downstream"]
    assert_flows(connect_pair(enabled))


def test_a_proxy_can_be_disabled_and_enabled_twice(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair
) -> None:
    proxy = make_proxy()
    for enabled in (False, False, True, True):
        assert toxiproxy.api.update_proxy("test", enabled=enabled)["enabled"] is enabled
    assert_flows(connect_pair(proxy))


def test_changing_listen_moves_the_port(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair, http: Any
) -> None:
    proxy = make_proxy()
    pair = connect_pair(proxy)
    new_port = free_port()
    response = http("PATCH", "/proxies/test", json={"listen": toxiproxy.listen(new_port)})
    assert response.status_code == 200
    moved = response.json()
    assert port_of(moved["listen"]) == new_port
    assert seconds_until_closed(pair.client, timeout_s=2.0) < 1.0
    assert not can_connect(toxiproxy.proxy_host, port_of(proxy["listen"]))
    assert_flows(connect_pair(moved))


def test_restating_an_equivalent_listen_keeps_connections(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair
) -> None:
    proxy = make_proxy(listen="127.0.0.1:0")
    pair = connect_pair(proxy)
    port = port_of(proxy["listen"])
    same = toxiproxy.api.update_proxy("test", listen=f"localhost:{port}")
    assert same["listen"] == f"127.0.0.1:{port}"
    assert_flows(pair)


def test_changing_upstream_restarts_the_proxy(
    toxiproxy: Target,
    make_proxy: MakeProxy,
    connect_pair: ConnectPair,
    connect: Callable[[Proxy], socket.socket],
    sockets: SocketBag,
) -> None:
    proxy = make_proxy()
    pair = connect_pair(proxy)
    other = Upstream(sockets, toxiproxy.upstream_bind_host)
    moved = toxiproxy.api.update_proxy("test", upstream=toxiproxy.upstream(other.port))
    assert port_of(moved["listen"]) == port_of(proxy["listen"])
    assert seconds_until_closed(pair.client, timeout_s=2.0) < 1.0
    client = connect(moved)
    server = other.accept()
    client.sendall(b"moved")
    assert recv_exactly(server, 5) == b"moved"


def test_delete_closes_connections(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair
) -> None:
    proxy = make_proxy()
    pair = connect_pair(proxy)
    toxiproxy.api.delete_proxy("test")
    assert seconds_until_closed(pair.client, timeout_s=2.0) < 1.0
    assert seconds_until_closed(pair.server, timeout_s=2.0) < 1.0
    assert not can_connect(toxiproxy.proxy_host, port_of(proxy["listen"]))


def test_reset_keeps_connections_and_removes_toxics_from_them(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair
) -> None:
    proxy = make_proxy()
    toxiproxy.api.add_toxic("test", "bandwidth", attributes={"rate": 0})
    pair = connect_pair(proxy)
    pair.server.sendall(b"held")
    toxiproxy.api.reset()
    assert recv_exactly(pair.client, 4, timeout_s=2.0) == b"held"
    assert_flows(pair)


def test_reset_closes_connections_of_a_timeout_toxic(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair
) -> None:
    proxy = make_proxy()
    toxiproxy.api.add_toxic("test", "timeout", stream="upstream", toxicity=0)
    pair = connect_pair(proxy)
    assert_flows(pair)  # toxicity 0: the toxic rolled noop on this link
    toxiproxy.api.reset()
    assert seconds_until_closed(pair.client, timeout_s=2.0) < 1.0
    assert seconds_until_closed(pair.server, timeout_s=2.0) < 1.0


def test_a_close_delivers_the_data_in_flight_first(
    toxiproxy: Target,
    make_proxy: MakeProxy,
    connect: Callable[[Proxy], socket.socket],
    sockets: SocketBag,
) -> None:
    # The client streams 8 MiB to a server with a small receive window that half-closes
    # before reading: the proxy closes the client side at once, and must still deliver
    # everything it holds for the server before it closes that side too.
    listener = sockets.adopt(socket.socket())
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind((toxiproxy.upstream_bind_host, 0))
    listener.listen()
    listener.settimeout(3.0)
    proxy = make_proxy(upstream=toxiproxy.upstream(listener.getsockname()[1]))
    client = connect(proxy)
    server = sockets.adopt(listener.accept()[0])
    payload = bytes(range(256)) * (32 * 1024)  # 8 MiB, more than the kernel buffers
    sender = threading.Thread(target=lambda: client.sendall(payload), daemon=True)
    sender.start()
    time.sleep(0.3)  # the proxy has read the payload and holds what the server won't take
    server.shutdown(socket.SHUT_WR)
    received = bytearray()
    server.settimeout(5.0)
    while piece := server.recv(64 * 1024):
        received += piece
    sender.join(5)
    assert not sender.is_alive()
    assert len(received) == len(payload)
    assert received == payload
