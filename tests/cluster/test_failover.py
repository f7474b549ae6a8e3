"""Failover: the master serving a function is killed (SIGKILL) while 16 producers enqueue
and a runtime runs the jobs; its replica is promoted and the fleet continues. The
replica is paused and cut off 0.5 s before each kill, so the writes of that window exist
on the master alone (the window of asynchronous replication, made wide enough to hit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cluster.failover import run_drill
from tests.redis_cluster import NODE_TIMEOUT_MS, RedisCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# The aim is cluster-node-timeout + 2 s (4 s here); measured 3.4-6.2 s on this 2-core
# machine (Redis's election adds 0.5-1.5 s after the timeout, the probe polls, and a loaded
# machine adds more: 6.24 s failed a bound of 6 s in one run of five). This bound only
# proves the fleet comes back by itself; the figure is reported (docs/architecture.md,
# "Scaling out"), not asserted to the aim, so CI does not fail on the machine's load.
OUTAGE_BOUND_S = NODE_TIMEOUT_MS / 1000 + 10


async def test_without_replica_acks_a_failover_loses_acknowledged_jobs(
    failover_cluster: RedisCluster, tmp_path: Path
) -> None:
    drill = await run_drill(
        failover_cluster, tmp_path, failovers=1, replica_acks=0, producers=16, lag_s=0.5
    )
    print(json.dumps({"replica_acks": 0, **drill.figures()}))
    assert drill.lost, "the replica missed 0.5 s of writes: some must be gone"
    assert set(drill.states.values()) == {"missing"}
    assert max(drill.outages_s) < OUTAGE_BOUND_S


async def test_replica_acks_lose_no_acknowledged_job_over_three_failovers(
    failover_cluster: RedisCluster, tmp_path: Path
) -> None:
    drill = await run_drill(
        failover_cluster, tmp_path, failovers=3, replica_acks=1, producers=16, lag_s=0.5
    )
    print(json.dumps({"replica_acks": 1, **drill.figures()}))
    assert drill.lost == []
    assert len(drill.acknowledged) > 1000
