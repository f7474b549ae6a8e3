"""The cluster starter (chaos/suite/redis_cluster.py) survives a port taken between its
choice and the node's bind: scenario 15 failed once at its start with "redis-server
exited with 1" in a full run of the suite, and passed alone."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from chaos.suite.redis_cluster import ClusterNode, free_cluster_port, server_pid

pytestmark = [pytest.mark.timeout(60)]


def test_a_new_node_whose_port_was_taken_starts_on_another(tmp_path: Path) -> None:
    node = ClusterNode(tmp_path / "n0", "redis-server")
    taken = node.port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        node.start()
        try:
            assert node.port != taken
            with socket.create_connection(("127.0.0.1", node.port), timeout=2) as s:
                s.sendall(b"PING\r\n")
                assert s.recv(16) == b"+PONG\r\n"
        finally:
            node.kill()


def test_cluster_ports_and_their_bus_ports_are_below_the_ephemeral_range() -> None:
    for _ in range(50):
        port = free_cluster_port()
        assert port >= 20_000 and port + 10_000 < 32_768


def test_a_node_is_not_taken_for_started_by_another_nodes_answer(tmp_path: Path) -> None:
    """Two nodes given the same port: the second's redis-server exits (the port is held),
    and a PING on that port would be answered by the first. It starts on another port, and
    the server answering there is its own process."""
    first = ClusterNode(tmp_path / "n0", "redis-server")
    second = ClusterNode(tmp_path / "n1", "redis-server")
    second.port = first.port
    first.start()
    try:
        second.start()
        try:
            assert second.port != first.port
            assert second.process is not None
            assert server_pid(second.port) == second.process.pid
            assert first.process is not None and server_pid(first.port) == first.process.pid
        finally:
            second.kill()
    finally:
        first.kill()


def test_ports_are_never_handed_out_twice() -> None:
    ports = [free_cluster_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
