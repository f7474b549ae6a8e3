"""Failover: a master serving a function is killed (SIGKILL) while jobs flow; the fleet
continues within cluster-node-timeout + 2 s, and with ``redis.replica_acks = 1`` no
acknowledged job is lost over 3 failovers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cluster.failover import run_drill
from tests.redis_cluster import NODE_TIMEOUT_MS, RedisCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


async def test_replica_acks_lose_no_acknowledged_job_over_three_failovers(
    failover_cluster: RedisCluster, tmp_path: Path
) -> None:
    drill = await run_drill(failover_cluster, tmp_path, failovers=3, replica_acks=1)
    print(json.dumps({"replica_acks": 1, **drill.figures()}))
    assert drill.lost == []
    assert len(drill.acknowledged) > 100
    assert max(drill.outages_s) < NODE_TIMEOUT_MS / 1000 + 2 + 1  # + 1: a loaded machine
