"""Part D: a real redis-server behind the proxy, driven by redis-py, under each fault a
chaos suite relies on. The client retries nothing, so each fault reaches the test."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chaos.proxy.testing import Target, port_of

pytestmark = pytest.mark.integration

SOCKET_TIMEOUT_S = 0.5


@pytest.fixture
def direct(redis_url: str) -> Iterator[redis.Redis]:
    """A client straight to redis-server (flushed), for setup and checks."""
    client = redis.Redis.from_url(redis_url, socket_timeout=2.0)
    yield client
    client.close()


@pytest.fixture
def proxied(toxiproxy: Target, redis_server: Any, direct: redis.Redis) -> Iterator[redis.Redis]:
    """A client through a proxy named ``redis`` in front of the session's redis-server."""
    proxy = toxiproxy.api.create_proxy(
        "redis", toxiproxy.upstream(redis_server.port), toxiproxy.listen()
    )
    client = redis.Redis(
        host=toxiproxy.proxy_host,
        port=port_of(proxy["listen"]),
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )
    yield client
    client.close()


def test_disable_gives_connection_error_and_enable_recovers(
    toxiproxy: Target, proxied: redis.Redis
) -> None:
    assert proxied.ping() is True
    toxiproxy.api.update_proxy("redis", enabled=False)
    with pytest.raises(redis.ConnectionError):
        proxied.ping()
    with pytest.raises(redis.ConnectionError):  # refused while down
        proxied.ping()
    toxiproxy.api.update_proxy("redis", enabled=True)
    assert proxied.ping() is True


def test_reset_peer_gives_a_reset_error(toxiproxy: Target, proxied: redis.Redis) -> None:
    toxiproxy.api.add_toxic("redis", "reset_peer", stream="upstream")  # before connecting
    with pytest.raises(redis.ConnectionError, match=r"(?i)reset"):
        proxied.ping()
    toxiproxy.api.delete_toxic("redis", "reset_peer_upstream")
    assert proxied.ping() is True


def test_latency_is_a_floor_for_every_command(toxiproxy: Target, proxied: redis.Redis) -> None:
    assert proxied.ping() is True
    toxiproxy.api.add_toxic("redis", "latency", attributes={"latency": 200})
    for command in (lambda: proxied.set("k", "v"), lambda: proxied.get("k")):
        started = time.monotonic()
        command()
        assert 0.19 <= time.monotonic() - started < 1.0


def test_blackhole_trips_socket_timeout_and_removal_reconnects(
    toxiproxy: Target, proxied: redis.Redis
) -> None:
    first_id = proxied.client_id()
    toxiproxy.api.add_toxic("redis", "timeout", attributes={"timeout": 0})
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        proxied.ping()
    assert SOCKET_TIMEOUT_S * 0.95 <= time.monotonic() - started < SOCKET_TIMEOUT_S + 1.0
    toxiproxy.api.delete_toxic("redis", "timeout_downstream")
    assert proxied.client_id() != first_id  # a new connection to redis-server


def test_low_bandwidth_slows_a_large_get(
    toxiproxy: Target, proxied: redis.Redis, direct: redis.Redis
) -> None:
    value = b"v" * 100_000
    direct.set("big", value)
    assert proxied.ping() is True
    toxiproxy.api.add_toxic("redis", "bandwidth", attributes={"rate": 500})  # 500 000 B/s
    started = time.monotonic()
    assert proxied.get("big") == value
    assert 0.18 <= time.monotonic() - started < 1.5


def test_limit_data_truncates_a_reply_and_the_client_errors(
    toxiproxy: Target, proxied: redis.Redis, direct: redis.Redis
) -> None:
    direct.set("big", b"v" * 100_000)
    assert proxied.ping() is True
    toxiproxy.api.add_toxic("redis", "limit_data", attributes={"bytes": 1000})
    with pytest.raises(redis.ConnectionError):
        proxied.get("big")
    toxiproxy.api.delete_toxic("redis", "limit_data_downstream")
    assert proxied.get("big") == b"v" * 100_000
