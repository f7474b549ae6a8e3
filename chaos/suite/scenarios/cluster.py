"""Scenarios 15-17, on a Redis Cluster (``cluster_stage.py``): a master ``kill -9`` with
failover, with ``redis.replica_acks`` = 1 (15) and without (17), and a runtime SIGKILL (16).

The failover: jobs of ``work`` flow from the load generator to two ``runtime serve``
processes on the cluster URL; the victim's replica is first paused and cut off for
``LAG_S`` (the window of asynchronous replication, made wide enough to hit), then the
master serving ``work``'s slot is killed with SIGKILL. Its replica is promoted; once every
live node sees that, the victim is started again (as a supervisor would) and rejoins as a
replica of the promoted one. With ``replica_acks`` = 1 nothing is acknowledged to the load
generator, and no settle counted, that the promoted replica lacks, so the checker finds
every accepted job terminal; without it the writes of the window are gone with the victim.
"""

from __future__ import annotations

import asyncio
import signal
import time

from chaos.suite import checker
from chaos.suite.checker import Fault
from chaos.suite.cluster_stage import ClusterStage
from chaos.suite.redis_cluster import NODE_TIMEOUT_MS
from chaos.suite.scenarios import processes
from chaos.suite.stage import Stage

FUNCTION_KEY = "{rt:work}:x"  # a key in the slot of every key of ``work``
LAG_S = 0.5
# From the promoted replica accepting writes to a job completing: redis-py's refresh of its
# map of slots, the dispatcher's retry and one claim; generous, the machine is shared.
CONTINUE_BOUND_S = NODE_TIMEOUT_MS / 1000 + 8


def _cluster(stage: Stage) -> ClusterStage:
    if not isinstance(stage, ClusterStage):
        raise TypeError(f"scenario {stage.number} needs a cluster stage")
    return stage


async def _first_completion_after(stage: Stage, since: float) -> float | None:
    """Unix time of the first accepted job completed (server time) after ``since``."""
    found = await checker.records(stage.client, stage.accepted)
    ends = [
        r.finished_ms / 1000
        for r in found.values()
        if r is not None and r.state == "completed" and r.finished_ms
    ]
    later = [t for t in ends if t > since]
    return min(later) if later else None


def _since(at: float | None, since: float) -> str:
    return "-" if at is None else f"{at - since:.2f}"


async def master_kill(stage: Stage) -> None:
    """15 and 17. kill -9 of the master serving ``work``, after its replica lagged."""
    cluster = _cluster(stage).cluster
    await stage.start()
    stage.load(500, 10.0)
    await stage.busiest(at_least=2)
    await asyncio.sleep(1.5)  # jobs flow on both runtimes
    victim = await asyncio.to_thread(cluster.owner, FUNCTION_KEY)
    replica = await asyncio.to_thread(cluster.replica_of, victim)
    lagging = time.time()
    replica.signal(signal.SIGSTOP)  # paused, then cut off: the writes from now on stay on
    await asyncio.to_thread(cluster.info, victim, "client", "kill", "type", "replica")
    await asyncio.sleep(LAG_S)
    killed = time.time()
    await asyncio.to_thread(victim.kill)
    replica.signal(signal.SIGCONT)
    await asyncio.to_thread(cluster.wait_promoted, victim, 30.0)
    promoted = time.time()
    await asyncio.to_thread(victim.start)  # back, as a replica of the promoted one
    await asyncio.to_thread(cluster.wait_replicas, 30.0)
    rejoined = time.time()
    # With replica_acks nothing is acknowledged until the victim is back as a replica.
    writable = rejoined if _cluster(stage).replica_acks else promoted
    # Every job in flight may run again: its settle and heartbeats failed while the slot
    # had no master (and, with replica_acks, no replica), and its lease expired. A settle
    # refused for want of a replica's copy during the lag is one too.
    stage.record(Fault(f"kill -9 master {victim.address}", lagging, writable, must_hit=True))
    await stage.wait_loads()
    first = await _first_completion_after(stage, killed)
    # With replica_acks a completion may be written on the promoted master before it has a
    # replica (its WAIT fails, the settle is retried): the first acknowledged enqueue
    # after the kill says when the slot took acknowledged writes again.
    accepted = min((t for t in stage.accepted.values() if t > killed), default=None)
    phases = (
        f"kill -> promoted (every live node's CLUSTER NODES) {promoted - killed:.2f} s; "
        f"-> victim back in sync as a replica {rejoined - killed:.2f} s; "
        f"-> first job completed {_since(first, killed)} s; "
        f"-> first enqueue acknowledged {_since(accepted, killed)} s"
    )
    stage.note(phases)
    stage.check(
        f"the fleet continues within {CONTINUE_BOUND_S:g} s of the slot accepting writes",
        first is not None and first - writable <= CONTINUE_BOUND_S,
        phases,
    )
    deaths = stage.fleet.reap()
    stage.check("no runtime exited", not deaths, f"{deaths}")


async def worker_kill(stage: Stage) -> None:
    """16. Scenario 2 on a cluster: a runtime SIGKILLed three times, its leases reclaimed."""
    _cluster(stage)
    await processes.sigkill(stage)
