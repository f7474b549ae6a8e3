"""A stage on a Redis Cluster: 3 masters (and one replica each, for the failover scenario)
started from ``redis-server`` processes (``redis_cluster.py``) instead of one redis-server
behind proxies. The runtimes, the load generator and the harness's client all use the
cluster URL ``redis+cluster://…`` straight (a cluster client must reach every node at the
address the cluster announces, so there is no proxy here: the faults are processes dying).

With ``replica_acks`` > 0 the runtimes and the load generator run with
``redis.replica_acks`` = N: an enqueue the load generator counts as accepted, and a settle a
runtime counts as done, are on a replica too, so they survive the promotion of that replica.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import msgspec

from chaos.proxy.testing import Target
from chaos.suite.load import CLIENT_SETTINGS
from chaos.suite.redis_cluster import RedisCluster
from chaos.suite.stage import Stage


class ClusterStage(Stage):
    replicas = True
    replica_acks = 1

    def __init__(self, number: int, root: Path, target: Target, rng: random.Random) -> None:
        super().__init__(number, root, target, rng)
        self.cluster = RedisCluster(replicas=self.replicas, root=self.dir / "cluster")
        self.client_settings = msgspec.structs.replace(
            CLIENT_SETTINGS, replica_acks=self.replica_acks
        )
        self.fleet.env["RUNTIME_REDIS__REPLICA_ACKS"] = str(self.replica_acks)

    @property
    def url(self) -> str:
        return self.cluster.url

    async def start(
        self,
        runtimes: int = 2,
        *,
        persistent: bool = True,
        redis_settings: dict[str, str] | None = None,
        ready: bool = True,
    ) -> None:
        """Start the cluster (``persistent`` and ``redis_settings`` do not apply: its nodes
        keep no AOF, a failed master's data lives on in its replica), then the runtimes."""
        await asyncio.to_thread(self.cluster.start)
        for i in range(runtimes):
            self.fleet.add_slot(f"rt{i}", self.url)
        await self.fleet.start(ready=ready)

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await asyncio.to_thread(self.cluster.stop)


class UnacknowledgedClusterStage(ClusterStage):
    """3 masters + 3 replicas, with ``redis.replica_acks`` = 0 (the default)."""

    replica_acks = 0


class MastersOnlyStage(ClusterStage):
    """3 masters and no replica: enough for faults that kill runtimes, not Redis."""

    replicas = False
    replica_acks = 0
