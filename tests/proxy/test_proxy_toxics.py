"""Part C: what each toxic does to real sockets (mirrors ``toxics/*_test.go``).

Timing bounds are generous on purpose (a loaded 2-core CI machine): lower bounds allow a
few percent of timer slack, upper bounds leave most of a second.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chaos.proxy.probes import (
    assert_silent,
    recv_exactly,
    recv_to_eof,
    recv_until,
    seconds_until_closed,
)
from chaos.proxy.testing import Target

Proxy = dict[str, Any]
MakeProxy = Callable[..., Proxy]
ConnectPair = Callable[[Proxy], Any]


@contextlib.contextmanager
def background(action: Callable[[], None], name: str) -> Iterator[None]:
    """Run ``action`` in a thread for the body of a ``with``; re-raise what it raised."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    yield
    worker.join(10)
    assert not worker.is_alive(), f"{name} did not finish"
    if failure:
        raise failure[0]


@pytest.mark.parametrize(
    ("upstream_ms", "downstream_ms"), [(100, 0), (0, 100), (100, 100), (1000, 100), (100, 1000)]
)
def test_latency(
    toxiproxy: Target,
    make_proxy: MakeProxy,
    connect_pair: ConnectPair,
    upstream_ms: int,
    downstream_ms: int,
) -> None:
    proxy = make_proxy()
    for stream, latency in (("upstream", upstream_ms), ("downstream", downstream_ms)):
        if latency:
            toxiproxy.api.add_toxic(
                "test", "latency", stream=stream, attributes={"latency": latency}
            )
    pair = connect_pair(proxy)
    message = b"x" * (32 * 1024) + b"\n"

    started = time.monotonic()
    pair.client.sendall(message)
    assert recv_until(pair.server, b"\n", timeout_s=5) == message
    server_read_s = time.monotonic() - started
    replied = time.monotonic()
    pair.server.sendall(message)
    assert recv_until(pair.client, b"\n", timeout_s=5) == message
    client_read_s = time.monotonic() - replied
    round_trip_s = time.monotonic() - started

    assert upstream_ms / 1000 * 0.95 <= server_read_s < upstream_ms / 1000 + 1.0
    assert downstream_ms / 1000 * 0.95 <= client_read_s < downstream_ms / 1000 + 1.0
    total_s = (upstream_ms + downstream_ms) / 1000
    assert total_s * 0.95 <= round_trip_s < total_s + 1.5


def test_two_latency_toxics_add_up(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair
) -> None:
    proxy = make_proxy()
    for name in ("first", "second"):
        toxiproxy.api.add_toxic("test", "latency", name=name, attributes={"latency": 500})
    pair = connect_pair(proxy)
    started = time.monotonic()
    pair.server.sendall(b"hello\n")
    assert recv_until(pair.client, b"\n", timeout_s=5) == b"hello\n"
    assert 0.95 <= time.monotonic() - started < 2.5


def test_latency_does_not_cap_throughput(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair
) -> None:
    # 8 MiB is 256 reads of 32 KiB: 100 ms each one after the other would take 25 s;
    # pipelined, it takes the transfer time plus 100 ms once.
    proxy = make_proxy()
    toxiproxy.api.add_toxic("test", "latency", attributes={"latency": 100})
    pair = connect_pair(proxy)
    payload = bytes(range(256)) * (32 * 1024)
    started = time.monotonic()
    with background(lambda: pair.server.sendall(payload), "sender"):
        received = recv_exactly(pair.client, len(payload), timeout_s=10)
    elapsed = time.monotonic() - started
    assert received == payload
    assert 0.095 <= elapsed < 3.0


def test_adding_and_removing_latency_many_times_never_hangs(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair, upstream: Any
) -> None:
    proxy = make_proxy()
    live = connect_pair(proxy)
    for round_number in range(1000):
        toxiproxy.api.add_toxic("test", "latency", attributes={"latency": 1})
        if round_number % 100 == 0:
            fresh = connect_pair(proxy)
            fresh.client.sendall(b"new")
            assert recv_exactly(fresh.server, 3) == b"new"
            live.server.sendall(b"old")
            assert recv_exactly(live.client, 3) == b"old"
        toxiproxy.api.delete_toxic("test", "latency_downstream")
    live.server.sendall(b"end")
    assert recv_exactly(live.client, 3) == b"end"


def test_bandwidth_paces_and_keeps_the_data(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair
) -> None:
    proxy = make_proxy()
    toxiproxy.api.add_toxic("test", "bandwidth", attributes={"rate": 1000})  # 1 000 000 B/s
    pair = connect_pair(proxy)
    payload = bytes(range(250)) * 1920  # 480 000 bytes → about 480 ms
    started = time.monotonic()
    with background(lambda: pair.server.sendall(payload), "sender"):
        received = recv_exactly(pair.client, len(payload), timeout_s=5)
    elapsed = time.monotonic() - started
    assert received == payload
    assert 0.45 <= elapsed < 1.5


def test_bandwidth_zero_stalls_until_removed(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair
) -> None:
    proxy = make_proxy()
    toxiproxy.api.add_toxic("test", "bandwidth", attributes={"rate": 0})
    pair = connect_pair(proxy)
    pair.server.sendall(b"held")
    assert_silent(pair.client, 0.3)
    toxiproxy.api.delete_toxic("test", "bandwidth_downstream")
    assert recv_exactly(pair.client, 4, timeout_s=2) == b"held"


def test_timeout_zero_blackholes_and_removing_it_closes_both_ends(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair
) -> None:
    proxy = make_proxy()
    pair = connect_pair(proxy)
    toxiproxy.api.add_toxic("test", "timeout", attributes={"timeout": 0})
    pair.server.sendall(b"dropped")
    assert_silent(pair.client, 0.3)
    pair.client.sendall(b"up")  # the other direction still flows
    assert recv_exactly(pair.server, 2) == b"up"
    toxiproxy.api.delete_toxic("test", "timeout_downstream")
    assert recv_to_eof(pair.client, timeout_s=1.0) == b""
    assert recv_to_eof(pair.server, timeout_s=1.0) == b""


def test_timeout_closes_after_the_idle_time(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair
) -> None:
    proxy = make_proxy()
    toxiproxy.api.add_toxic("test", "timeout", attributes={"timeout": 100})
    started = time.monotonic()
    pair = connect_pair(proxy)
    recv_to_eof(pair.client, timeout_s=2.0)
    assert 0.095 <= time.monotonic() - started < 1.0


def test_removing_a_timeout_behind_a_latency_does_not_hang(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair
) -> None:
    proxy = make_proxy()
    toxiproxy.api.add_toxic("test", "latency", attributes={"latency": 100})
    toxiproxy.api.add_toxic("test", "timeout", attributes={"timeout": 0})
    pair = connect_pair(proxy)
    pair.server.sendall(b"x" * 1000)
    time.sleep(0.05)  # the chunk is now held by the latency stage
    toxiproxy.api.delete_toxic("test", "timeout_downstream")
    assert seconds_until_closed(pair.client, timeout_s=1.0) < 1.0


@pytest.mark.parametrize(
    ("stream", "timeout_ms"), [("upstream", 0), ("upstream", 100), ("downstream", 100)]
)
def test_reset_peer_sends_rst(
    toxiproxy: Target,
    make_proxy: MakeProxy,
    connect_pair: ConnectPair,
    stream: str,
    timeout_ms: int,
) -> None:
    proxy = make_proxy()
    attributes = {"timeout": timeout_ms}
    toxiproxy.api.add_toxic("test", "reset_peer", stream=stream, attributes=attributes)
    pair = connect_pair(proxy)
    started = time.monotonic()
    (pair.client if stream == "upstream" else pair.server).sendall(b"trigger")
    pair.client.settimeout(2.0)
    with pytest.raises(ConnectionResetError):
        pair.client.recv(64)
    elapsed = time.monotonic() - started
    assert timeout_ms / 1000 * 0.95 <= elapsed < timeout_ms / 1000 + 1.0
    assert pair.client.recv(64) == b""


def test_reset_peer_added_to_an_open_connection_closes_with_fin(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair
) -> None:
    proxy = make_proxy()
    pair = connect_pair(proxy)
    toxiproxy.api.add_toxic("test", "reset_peer", stream="upstream")
    pair.client.sendall(b"trigger")
    pair.client.settimeout(2.0)
    assert pair.client.recv(64) == b""  # EOF, not ECONNRESET


def test_slicer_delivers_everything_in_order(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair
) -> None:
    proxy = make_proxy()
    attributes = {"average_size": 1, "size_variation": 0, "delay": 10}
    toxiproxy.api.add_toxic("test", "slicer", attributes=attributes)
    attributes = {"average_size": 1024, "size_variation": 512, "delay": 10}
    toxiproxy.api.add_toxic("test", "slicer", stream="upstream", attributes=attributes)
    pair = connect_pair(proxy)
    pair.server.sendall(b"abcdefghijklmnopqrstuvwx")
    assert recv_exactly(pair.client, 24) == b"abcdefghijklmnopqrstuvwx"
    payload = bytes(range(256)) * 200
    pair.client.sendall(payload)
    assert recv_exactly(pair.server, len(payload)) == payload


def test_limit_data_forwards_that_many_bytes_then_closes(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair
) -> None:
    proxy = make_proxy()
    toxiproxy.api.add_toxic("test", "limit_data", attributes={"bytes": 100})
    pair = connect_pair(proxy)
    pair.server.sendall(b"a" * 90)
    assert recv_exactly(pair.client, 90) == b"a" * 90
    pair.server.sendall(b"b" * 60)
    assert recv_to_eof(pair.client, timeout_s=2.0) == b"b" * 10
    assert recv_to_eof(pair.server, timeout_s=2.0) == b""


def test_slow_close_delays_the_close(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair
) -> None:
    proxy = make_proxy()
    toxiproxy.api.add_toxic("test", "slow_close", attributes={"delay": 300})
    pair = connect_pair(proxy)
    pair.server.sendall(b"last words")
    started = time.monotonic()
    pair.server.shutdown(socket.SHUT_WR)
    assert recv_to_eof(pair.client, timeout_s=2.0) == b"last words"
    assert 0.285 <= time.monotonic() - started < 1.5


def test_toxicity_zero_passes_and_updating_it_to_one_applies(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair
) -> None:
    proxy = make_proxy()
    toxiproxy.api.add_toxic("test", "timeout", toxicity=0, attributes={"timeout": 100})
    pair = connect_pair(proxy)
    pair.server.sendall(b"through")
    assert recv_exactly(pair.client, 7) == b"through"
    assert_silent(pair.client, 0.25)  # idle past 100 ms, yet open: the toxic rolled noop
    started = time.monotonic()
    toxiproxy.api.update_toxic("test", "timeout_downstream", toxicity=1)
    recv_to_eof(pair.client, timeout_s=2.0)
    assert 0.09 <= time.monotonic() - started < 1.0


def test_no_data_lost_or_reordered_while_toxics_change(
    toxiproxy: Target, make_proxy: MakeProxy, connect_pair: ConnectPair
) -> None:
    proxy = make_proxy()
    pair = connect_pair(proxy)
    payload = struct.pack(">65535H", *range(65535))  # sequenced 2-byte values
    received: list[bytes] = []
    is_sending = threading.Event()
    is_sending.set()

    def send() -> None:
        try:
            for number, offset in enumerate(range(0, len(payload), 256)):
                pair.client.sendall(payload[offset : offset + 256])
                if number % 32 == 0:
                    time.sleep(0.002)  # spread the stream over the toxic changes
        finally:
            is_sending.clear()

    def receive() -> None:
        received.append(recv_exactly(pair.server, len(payload), timeout_s=20))

    api = toxiproxy.api
    changes = 0
    with background(receive, "receiver"), background(send, "sender"):
        while is_sending.is_set() or changes < 20:
            api.add_toxic("test", "noop", stream="upstream", name="n")
            api.add_toxic("test", "latency", stream="upstream", attributes={"latency": 2})
            api.update_toxic("test", "latency_upstream", attributes={"latency": 1})
            api.delete_toxic("test", "n")
            api.delete_toxic("test", "latency_upstream")
            changes += 1
    assert received == [payload]
    pair.client.shutdown(socket.SHUT_WR)
    assert recv_to_eof(pair.server, timeout_s=2.0) == b""
