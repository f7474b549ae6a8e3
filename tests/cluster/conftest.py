"""A real 3-master Redis Cluster per session (flushed before each test), and a 3+3 one
for the failover tests (each test starts its own: it kills masters)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import make_harness  # noqa: F401  (for the imported tests)
from tests.redis_cluster import RedisCluster


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> str:
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture
def failover_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster(replicas=True)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_url(cluster_url: str) -> str:
    """The integration tests imported here run on the session's cluster, flushed."""
    return cluster_url
