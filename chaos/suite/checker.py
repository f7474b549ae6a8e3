"""The checker: at quiescence, what the witness and Redis say about every accepted job.

Figures, per scenario:

- **accepted / completed / dead by reason / lost**: lost is accepted with no terminal state
  (still waiting, running, or gone from Redis) once the fleet has gone quiet.
- **extra starts against the bound**: starts beyond one per job. A fault may re-run the jobs
  that were in flight when it hit (at-least-once), so the bound is the sum over the faults
  of the jobs in flight at each, computed from the witness; faults that promise no re-run
  (a graceful drain, mere latency) add nothing. A re-run job that was in flight at no fault
  is *unexplained*.
- **double completions**: the ``completed`` counters of the ``{ns:fn}:stats`` hashes against
  the job hashes in state ``completed``: a completion applied twice shows as a surplus.
- **leftovers** in ready, leased and delayed;
- **worker_crashed without a dead worker**: a job is dead-lettered ``worker_crashed`` only
  when its worker stopped heartbeating ``max_recoveries + 1`` times; with no runtime
  process dead in the scenario, any such job is a lease the runtime let expire while alive.
- **ready after the heal**: from Redis recovering to every runtime's ``/readyz`` 200 again,
  in the scenarios that measure it;
- **recovery**: fault healed → completions flowing again (the first job completed after the
  heal); **hit done**: fault started → the last job in flight at it reached a terminal state
  (for a SIGKILL, about one lease plus one reclaim round); p50/p95 of enqueue → completion.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from chaos.suite.witness import Run, Witness
from runtime.client import Client
from runtime.errors import BrokerUnavailable
from runtime.jobs.records import JobRecord

NAMESPACE = "rt"  # the runtime's default; the suite's runtimes keep it
FUNCTIONS = ("work", "fragile", "poison")
SETTLE_SLACK_S = 0.25  # a job that finished this long before a fault may not be settled yet
READ_TRIES = 5


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault. ``pids`` None: it hit every runtime (Redis, the whole network)."""

    name: str
    started: float  # unix time
    healed: float
    pids: frozenset[int] | None = None
    allows_reruns: bool = True
    slack_s: float = SETTLE_SLACK_S
    must_hit: bool = False  # the scenario proves nothing unless a job was in flight

    def in_flight(self, runs: Iterable[Run]) -> set[str]:
        """Jobs the fault may make run again: started by a hit process before the fault
        ended, and not finished (or finished too shortly before it to be settled)."""
        return {
            r.job
            for r in runs
            if (self.pids is None or r.pid in self.pids)
            and r.start < self.healed
            and (r.finish is None or r.finish > self.started - self.slack_s)
        }


@dataclass
class Figures:
    accepted: int = 0
    completed: int = 0
    dead: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    lost_jobs: list[str] = field(default_factory=list)  # "id: state", first ten
    unacknowledged: int = 0
    enqueue_retries: int = 0
    enqueue_replays: int = 0  # retried enqueues that found their first try applied
    starts: int = 0
    extra_starts: int = 0
    bound: int = 0
    unexplained: list[str] = field(default_factory=list)
    double_completions: int = 0
    rerun_finishes: int = 0  # jobs whose handler ran to its end more than once
    leftovers: dict[str, int] = field(default_factory=dict)
    recovery_s: float | None = None  # worst over the faults
    hit_done_s: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    counters: dict[str, int] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    dead_runtimes: int = 0  # runtime processes that died (exit status not 0) in the scenario
    ready_s: float | None = None  # Redis recovered -> every runtime /readyz 200, worst case

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def _job(client: Client, job_id: str) -> JobRecord | None:
    """A read, tried again on a transient error: on a Redis Cluster, concurrent first calls
    of a fresh client (and the calls around a refresh of its map of slots) can meet a
    connection redis-py closed under them (``BrokerUnavailable``); a read is safe to repeat."""
    for _ in range(READ_TRIES - 1):
        try:
            return await client.job(job_id)
        except BrokerUnavailable:
            await asyncio.sleep(0.1)
    return await client.job(job_id)


async def records(client: Client, ids: Iterable[str]) -> dict[str, JobRecord | None]:
    ids = list(ids)
    out: dict[str, JobRecord | None] = {}
    for i in range(0, len(ids), 50):
        chunk = ids[i : i + 50]
        found = await asyncio.gather(*(_job(client, job_id) for job_id in chunk))
        out.update(zip(chunk, found, strict=True))
    return out


async def queue_stats(client: Client) -> dict[str, dict[str, int]]:
    return {name: await client.broker.stats(name) for name in FUNCTIONS}


def leftovers(stats: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    out = {"ready": 0, "leased": 0, "delayed": 0}
    for s in stats.values():
        out["ready"] += s["ready_high"] + s["ready_default"] + s["ready_low"]
        out["leased"] += s["in_flight"]
        out["delayed"] += s["delayed"]
    return out


async def wait_quiet(client: Client, ids: Iterable[str], timeout_s: float) -> bool:
    """Until every job is terminal and nothing is ready, leased or delayed."""
    pending = set(ids)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = await records(client, pending)
        pending = {i for i, r in found.items() if r is None or not r.is_terminal}
        if not pending and not any(leftovers(await queue_stats(client)).values()):
            return True
        await asyncio.sleep(0.2)
    return False


async def completed_hashes(client: Client) -> int:
    """Job hashes in state ``completed``, whoever enqueued them."""
    count = 0
    for name in FUNCTIONS:
        pattern = f"{{{NAMESPACE}:{name}}}:job:*"
        keys = [k async for k in client.broker.redis.scan_iter(match=pattern)]
        for i in range(0, len(keys), 200):
            pipe = client.broker.redis.pipeline(transaction=False)
            for key in keys[i : i + 200]:
                pipe.hget(key, "state")
            count += sum(1 for s in await pipe.execute() if s == b"completed")
    return count


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def figures(
    *,
    accepted: Mapping[str, float],
    found: Mapping[str, JobRecord | None],
    stats: Mapping[str, Mapping[str, int]],
    completed_in_redis: int,
    witness: Witness,
    faults: Iterable[Fault],
) -> Figures:
    f = Figures(accepted=len(accepted))
    dead: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []
    ends: dict[str, float] = {}  # job id -> unix time it became terminal
    for job_id in accepted:
        record = found.get(job_id)
        if record is None or not record.is_terminal:
            f.lost += 1
            if len(f.lost_jobs) < 10:
                f.lost_jobs.append(f"{job_id}: {record.state if record else 'missing'}")
            continue
        end_ms = record.finished_ms or record.enqueued_ms
        ends[job_id] = end_ms / 1000
        if record.state == "completed":
            f.completed += 1
            latencies.append(float(end_ms - record.enqueued_ms))
        else:
            dead[record.reason or "?"] += 1
    f.dead = dict(dead)
    f.p50_ms, f.p95_ms = _percentile(latencies, 0.5), _percentile(latencies, 0.95)

    runs = witness.runs()
    starts, finishes = witness.starts(), witness.finishes()
    f.starts = sum(starts.values())
    f.extra_starts = f.starts - len(starts)
    f.rerun_finishes = sum(1 for n in finishes.values() if n > 1)
    explained: set[str] = set()
    completions = sorted(
        t for job, t in ends.items() if (r := found.get(job)) and r.state == "completed"
    )
    recoveries: list[float] = []
    hit_done: list[float] = []
    for fault in faults:
        hit = fault.in_flight(runs)
        if fault.allows_reruns:
            f.bound += len(hit)
            explained |= hit
        i = bisect.bisect_right(completions, fault.healed)
        recovery = round(completions[i] - fault.healed, 2) if i < len(completions) else None
        done = [ends.get(job, float("inf")) for job in hit if job in accepted]
        finite = bool(done) and max(done) < float("inf")
        last = round(max(0.0, max(done) - fault.started), 2) if finite else None
        recoveries += [recovery] if recovery is not None else []
        hit_done += [last] if last is not None else []
        f.faults.append(
            {
                "name": fault.name,
                "started": round(fault.started, 3),
                "healed": round(fault.healed, 3),
                "in_flight": len(hit),
                "allows_reruns": fault.allows_reruns,
                "must_hit": fault.must_hit,
                "recovery_s": recovery,
                "hit_done_s": last,
            }
        )
    f.unexplained = sorted(job for job, n in starts.items() if n > 1 and job not in explained)
    f.recovery_s = max(recoveries) if recoveries else None
    f.hit_done_s = max(hit_done) if hit_done else None

    counters: collections.Counter[str] = collections.Counter()
    for s in stats.values():
        for key in ("completed", "dead", "retried", "recovered", "stale_acks", "skipped"):
            counters[key] += s.get(key, 0)
    f.counters = dict(counters)
    f.double_completions = counters["completed"] - completed_in_redis
    f.leftovers = leftovers(stats)
    return f


def crashes_explained(f: Figures) -> tuple[bool, str]:
    """No job dead-lettered ``worker_crashed`` unless a runtime process really died."""
    crashed = f.dead.get("worker_crashed", 0)
    ok = crashed == 0 or f.dead_runtimes > 0
    return ok, f"{crashed} worker_crashed, {f.dead_runtimes} runtime process(es) died"
