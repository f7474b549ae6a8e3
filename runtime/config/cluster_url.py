"""The Redis Cluster URL: ``redis+cluster://[[user]:password@]host:port[,host:port...]``
(``rediss+cluster://`` for TLS).

Its hosts are seed nodes: the client asks the first one that answers for the cluster's
map of slots and follows it (and its changes) from then on, so any few masters or
replicas do. A cluster has a single database, so no ``/db`` other than ``/0``.
"""

from __future__ import annotations

import urllib.parse
from typing import NamedTuple

SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # scheme -> TLS


class ClusterUrl(NamedTuple):
    seeds: list[tuple[str, int]]
    username: str | None
    password: str | None
    is_tls: bool


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SCHEMES


def parse_cluster_url(url: str) -> ClusterUrl:
    """The seeds and credentials of a cluster URL; ValueError (whose text never echoes the
    userinfo, which may hold a password) if it is not one."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in SCHEMES:
        raise ValueError("not a redis+cluster:// or rediss+cluster:// URL")
    userinfo, at, hosts = rest.rpartition("@")
    hosts, _, tail = hosts.partition("/")
    if tail.partition("?")[0] not in ("", "0"):
        raise ValueError("a cluster has one database: no /db other than /0")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = urllib.parse.unquote(user) or None
        password = urllib.parse.unquote(secret) if colon else None
    seeds = []
    for seed in hosts.split(","):
        host, colon, port = seed.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"each seed must be host:port with a port from 1 to 65535: {seed!r}")
        seeds.append((host.strip("[]"), int(port)))
    return ClusterUrl(seeds, username, password, SCHEMES[scheme.lower()])
