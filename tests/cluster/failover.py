"""A failover drill on a real 3-master + 3-replica cluster: jobs flow (a producer enqueues,
an in-process runtime runs them) while the master serving a function is killed with
SIGKILL; its replica is promoted and the killed node comes back as a replica. Counts the
acknowledged jobs lost, and times the outage and the enqueue latency."""

from __future__ import annotations

import asyncio
import signal
import statistics
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from runtime.client import Client
from runtime.config.registry import load_registry
from runtime.config.schema import RedisSettings, Settings
from runtime.errors import BrokerError, ResultTimeout
from runtime.jobs.records import JobRecord
from tests.integration.conftest import FAST_WORKER, Harness
from tests.redis_cluster import RedisCluster

HANDLERS = """
    from runtime import function

    @function(concurrency=16, max_attempts=50)
    async def echo(x: int) -> int:
        return x
"""
FUNCTION = "echo"
DEBUG = False


@dataclass
class Drill:
    acknowledged: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    outages_s: list[float] = field(default_factory=list)  # kill -> first job done after
    promoted_s: list[float] = field(default_factory=list)  # kill -> a live node sees it
    lost: list[str] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)  # of the lost: what Redis holds

    def figures(self) -> dict[str, object]:
        lat = sorted(self.latencies_ms)
        return {
            "acknowledged": len(self.acknowledged),
            "lost": len(self.lost),
            "enqueue_p50_ms": round(statistics.median(lat), 2),
            "enqueue_p99_ms": round(lat[int(len(lat) * 0.99) - 1], 2),
            "outages_s": [round(s, 2) for s in self.outages_s],
            "promoted_s": [round(s, 2) for s in self.promoted_s],
            "client_s": [
                round(o - p, 2) for o, p in zip(self.outages_s, self.promoted_s, strict=True)
            ],
        }


async def _produce(client: Client, drill: Drill, stop: asyncio.Event, lane: int) -> None:
    """Enqueues one job at a time; an id is acknowledged once enqueue returned it (a
    failed call is retried with the same id: safe, enqueue is keyed by id)."""
    n = 0
    while not stop.is_set():
        n += 1
        job_id = f"{FUNCTION}.drill{lane}x{n}"
        while True:
            started = time.perf_counter()
            try:
                await client.enqueue(FUNCTION, n, job_id=job_id)
            except BrokerError:
                await asyncio.sleep(0.05)
                continue
            drill.latencies_ms.append((time.perf_counter() - started) * 1000)
            drill.acknowledged.append(job_id)
            break
        await asyncio.sleep(0.002)


async def _first_job_done(client: Client, killed: float, deadline_s: float) -> float:
    """Seconds from ``killed`` (unix time) until a new job of the function completed: a
    probe is enqueued and waited for 0.5 s, again until one completes; the figure is the
    earliest completion (Redis's time) of the acknowledged probes, so a probe that
    completed while the next was being enqueued still counts."""
    started = time.monotonic()
    n, probes = 0, []
    while time.monotonic() - started < deadline_s:
        n += 1
        try:
            job = await client.enqueue(FUNCTION, -n, job_id=f"{FUNCTION}.probe{killed}.{n}")
            probes.append(job)
            record = await client.wait(job, 0.5)
            if record.state == "completed":
                break
        except (BrokerError, ResultTimeout, TimeoutError) as exc:
            if DEBUG:
                print(f"{time.monotonic() - started:.2f} probe: {exc!r}")
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(f"no job completed within {deadline_s}s of the kill")
    ends = []
    for job in probes:
        done = await _record(client, job)
        if done is not None and done.state == "completed" and done.finished_ms:
            ends.append(done.finished_ms / 1000)
    return min(ends) - killed


async def _record(client: Client, job_id: str) -> JobRecord | None:
    for _ in range(4):
        try:
            return await client.job(job_id)
        except BrokerError:
            await asyncio.sleep(0.2)
    return await client.job(job_id)


async def run_drill(
    cluster: RedisCluster,
    tmp: Path,
    *,
    failovers: int,
    replica_acks: int,
    producers: int = 4,
    lag_s: float = 0.0,
) -> Drill:
    """With ``lag_s``, the victim's replica is paused (SIGSTOP) and its link cut (CLIENT
    KILL TYPE replica) that long before the kill, and resumed after it: the writes of that
    window exist on the master alone, the window of asynchronous replication made wide
    enough to see."""
    folder = tmp / "functions"
    folder.mkdir(exist_ok=True)
    (folder / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    settings = Settings(
        redis=RedisSettings(url=cluster.url, timeout_s=0.5, replica_acks=replica_acks),
        worker=msgspec.structs.replace(FAST_WORKER, keep_result_s=3600),
    )
    harness = Harness(settings, load_registry(folder, settings.functions))
    harness.start()
    drill, stop = Drill(), asyncio.Event()
    lanes = [
        asyncio.create_task(_produce(harness.client, drill, stop, lane))
        for lane in range(producers)
    ]
    try:
        for _ in range(failovers):
            await asyncio.sleep(1.0)  # jobs flow
            victim = cluster.owner(f"{{rt:{FUNCTION}}}:x")
            replica = cluster.replica_of(victim)
            if lag_s:  # paused, then cut off: the writes from now on stay on the victim
                replica.signal(signal.SIGSTOP)
                await asyncio.to_thread(cluster.info, victim, "client", "kill", "type", "replica")
                await asyncio.sleep(lag_s)
            killed, killed_unix = time.monotonic(), time.time()
            victim.kill()
            if lag_s:
                replica.signal(signal.SIGCONT)
            probe = asyncio.create_task(_first_job_done(harness.client, killed_unix, 20.0))
            promoted = await asyncio.to_thread(cluster.wait_promoted, victim)
            drill.promoted_s.append(promoted - killed)
            # Back (as a supervisor restarts it), as a replica of the promoted one: with
            # replica_acks = 1 the promoted master acknowledges nothing until it has one.
            victim.start()
            await asyncio.to_thread(cluster.wait_replicas)
            drill.outages_s.append(await probe)
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*lanes)
    pending = list(drill.acknowledged)
    deadline = time.monotonic() + 60  # the backlog drains; a job never ending is lost
    while pending and time.monotonic() < deadline:
        states = await asyncio.gather(*(_state(harness, job_id) for job_id in pending))
        drill.states = {
            j: state for j, state in zip(pending, states, strict=True) if state != "completed"
        }
        pending = list(drill.states)
        if pending:
            await asyncio.sleep(0.5)
    drill.lost = pending
    await harness.close()
    return drill


async def _state(harness: Harness, job_id: str) -> str:
    """The job's state; "unreadable" only if five reads in a row fail (a read can meet the
    cluster still settling after a failover: the client refreshes its map and tries again)."""
    for _ in range(5):
        try:
            record = await harness.client.job(job_id)
        except BrokerError:
            await asyncio.sleep(0.2)
            continue
        return "missing" if record is None else record.state
    return "unreadable"


async def _main(failovers: int, replica_acks: int, producers: int, lag_ms: int = 0) -> None:
    import collections
    import json
    import tempfile

    cluster = RedisCluster(replicas=True)
    cluster.start()
    try:
        drill = await run_drill(
            cluster,
            Path(tempfile.mkdtemp()),
            failovers=failovers,
            replica_acks=replica_acks,
            producers=producers,
            lag_s=lag_ms / 1000,
        )
    finally:
        cluster.stop()
    lost = collections.Counter(drill.states.values())
    figures = {"failovers": failovers, "replica_acks": replica_acks, "lag_ms": lag_ms}
    figures.update(drill.figures())
    print(json.dumps({**figures, "lost_records": dict(lost)}))


if __name__ == "__main__":  # python -m tests.cluster.failover FAILOVERS ACKS PRODUCERS [LAG_MS]
    import sys

    asyncio.run(_main(*(int(a) for a in sys.argv[1:5])))
