"""How the benchmark measures: the processes it owns, CPU time, Redis commands, a timed
drain of a queue, and open-loop latency. Nothing here knows the runtime's API; ``run.py``
hands in what to enqueue and how to count what is left.

CPU comes from /proc (user + system ticks of every process in a session), so a worker's
children count too. Redis commands come from ``INFO commandstats``, which also counts the
commands a Lua script runs; the benchmark's own commands are measured and taken out.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

POLL_S = 0.01  # how often a drain checks whether the queue is empty
DRAIN_TIMEOUT_S = 120.0
NOTIFY_WAIT_S = 5.0  # how long after the last send to wait for stragglers
SCRIPT_COMMANDS = ("evalsha", "eval", "fcall", "evalsha_ro", "eval_ro", "fcall_ro")
# The benchmark's own calls; everything else in commandstats belongs to the system measured.
OWN_COMMANDS = frozenset({"info", "config|resetstat", "config|set", "config|get", "flushall"})
NOISY_CORES = 0.2  # foreign CPU use above this makes a phase's figures suspect

# -- processes ------------------------------------------------------------------------


class Children:
    """Every process the benchmark starts, each in a session of its own, stopped by pid."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw
            )
        self._procs.append(proc)
        return proc

    @staticmethod
    def signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        """Signal the process group created for ``proc``: the child and its descendants."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
        self.signal(proc, signal.SIGTERM)
        self.signal(proc, signal.SIGCONT)  # a paused process acts on SIGTERM once resumed
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.signal(proc, signal.SIGKILL)
            proc.wait(5.0)
        self.signal(proc, signal.SIGKILL)  # whatever it left behind in its group
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(self._procs):
            self.stop(proc, timeout_s=10.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError, aioredis.RedisError):
            if await check():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout_s:g}s")
        await asyncio.sleep(0.05)


# -- CPU ------------------------------------------------------------------------------

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def session_cpu_s(session: int) -> float:
    """User + system CPU seconds of every live process in a session."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # fields[0] is proc(5) field 3, so [3] is 6: session
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks * _TICK_S


def machine_busy_s() -> float:
    """CPU seconds all cores spent running processes, steal included (it was not ours
    either); interrupt time is left out: on loopback it is mostly our own traffic."""
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + steal) * _TICK_S


@dataclass(frozen=True)
class Usage:
    """CPU used during one phase by the worker, Redis, the benchmark and everyone else."""

    wall_s: float
    worker_s: float
    redis_s: float
    bench_s: float
    foreign_s: float  # other processes on the machine (other test runs, the system)

    @property
    def foreign_cores(self) -> float:
        return self.foreign_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def is_noisy(self) -> bool:
        return self.foreign_cores > NOISY_CORES


class CpuMeter:
    """Snapshots CPU use of the worker's and Redis's sessions, this process and the machine.

    The worker may be several processes (a fleet of serve processes, see fleet.py): their
    sessions are summed into one worker figure.
    """

    def __init__(self, worker_session: int | Sequence[int], redis_session: int) -> None:
        if isinstance(worker_session, int):
            worker_session = (worker_session,)
        self._workers = tuple(worker_session)
        self._redis = redis_session

    def read(self) -> tuple[float, ...]:
        worker = sum(session_cpu_s(s) for s in self._workers)
        redis = session_cpu_s(self._redis)
        return time.perf_counter(), worker, redis, time.process_time(), machine_busy_s()

    @staticmethod
    def usage(before: tuple[float, ...], after: tuple[float, ...]) -> Usage:
        wall, worker, redis, bench, busy = (a - b for a, b in zip(after, before, strict=True))
        return Usage(wall, worker, redis, bench, max(0.0, busy - worker - redis - bench))


# -- Redis commands -------------------------------------------------------------------


async def commandstats(r: aioredis.Redis) -> Counter[str]:
    info = await r.info("commandstats")
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()})


def without_own(c: Counter[str]) -> Counter[str]:
    return Counter({k: v for k, v in c.items() if k not in OWN_COMMANDS and v > 0})


async def probe_profile(r: aioredis.Redis, probe: Callable[[], Awaitable[Any]]) -> Counter[str]:
    """The commands one call of ``probe`` sends, measured rather than assumed."""
    before = await commandstats(r)
    await probe()
    return without_own(await commandstats(r) - before)


# -- throughput -----------------------------------------------------------------------


@dataclass
class Drain:
    """One throughput run: ``jobs`` enqueued while the worker was paused, then drained."""

    system: str
    jobs: int
    enqueue_s: float
    drain_s: float
    usage: Usage  # during the drain
    enqueue_cmds: Counter[str]
    worker_cmds: Counter[str]  # with the benchmark's polling taken out
    probe_cmds: int  # the benchmark's own polling commands during the drain
    polls: int

    @property
    def jobs_s(self) -> float:
        return self.jobs / self.drain_s

    @property
    def e2e_jobs_s(self) -> float:
        return self.jobs / (self.enqueue_s + self.drain_s)

    def summary(self) -> dict[str, Any]:
        total = self.enqueue_cmds + self.worker_cmds
        per_job = 1 / self.jobs
        u = self.usage
        return {
            "system": self.system,
            "jobs": self.jobs,
            "enqueue_s": round(self.enqueue_s, 3),
            "drain_s": round(self.drain_s, 3),
            "drain_jobs_s": round(self.jobs_s),
            "e2e_jobs_s": round(self.e2e_jobs_s),
            "worker_cpu_s_per_1k": round(u.worker_s * per_job * 1000, 4),
            "worker_cores": round(u.worker_s / u.wall_s, 2),
            "redis_cpu_s_per_1k": round(u.redis_s * per_job * 1000, 4),
            "redis_cores": round(u.redis_s / u.wall_s, 2),
            "bench_cores": round(u.bench_s / u.wall_s, 2),
            "foreign_cores": round(u.foreign_cores, 2),
            "cmds_per_job": round(total.total() * per_job, 2),
            "enqueue_cmds_per_job": round(self.enqueue_cmds.total() * per_job, 2),
            "worker_cmds_per_job": round(self.worker_cmds.total() * per_job, 2),
            "script_calls_per_job": round(sum(total[c] for c in SCRIPT_COMMANDS) * per_job, 3),
            "worker_script_calls_per_job": round(
                sum(self.worker_cmds[c] for c in SCRIPT_COMMANDS) * per_job, 4
            ),
            "top_cmds_per_job": {k: round(v * per_job, 3) for k, v in total.most_common(10)},
            "probe_cmds_excluded": self.probe_cmds,
            "polls": self.polls,
        }


async def measure_drain(
    *,
    system: str,
    r: aioredis.Redis,
    jobs: int,
    worker: subprocess.Popen[bytes] | Sequence[subprocess.Popen[bytes]],
    meter: CpuMeter,
    enqueue: Callable[[], Awaitable[float]],
    remaining: Callable[[], Awaitable[int]],
) -> Drain:
    """Pause the worker, enqueue, resume it and time until ``remaining()`` reaches 0.

    The worker is warm, connected and idle when it is paused, so the drain starts the moment
    it is resumed: the same start line for every system. ``remaining`` polls every POLL_S;
    its commands are measured once and subtracted from the worker's. ``worker`` may be
    several processes (a fleet): all are paused and resumed together.
    """
    workers = [worker] if isinstance(worker, subprocess.Popen) else list(worker)
    profile = await probe_profile(r, remaining)
    for proc in workers:
        Children.signal(proc, signal.SIGSTOP)
    try:
        await r.config_resetstat()
        before = await commandstats(r)
        enqueue_s = await enqueue()
        queued = await commandstats(r)
        cpu0 = meter.read()
    finally:
        for proc in workers:
            Children.signal(proc, signal.SIGCONT)
    polls = 0
    while True:
        polls += 1
        left = await remaining()
        if left <= 0:
            break
        if time.perf_counter() - cpu0[0] > DRAIN_TIMEOUT_S:
            raise RuntimeError(f"{system}: {left} of {jobs} jobs unfinished after the timeout")
        await asyncio.sleep(POLL_S)
    cpu1 = meter.read()
    after = await commandstats(r)
    probe = Counter({k: v * polls for k, v in profile.items()})
    return Drain(
        system=system,
        jobs=jobs,
        enqueue_s=enqueue_s,
        drain_s=cpu1[0] - cpu0[0],
        usage=CpuMeter.usage(cpu0, cpu1),
        enqueue_cmds=without_own(queued - before),
        worker_cmds=without_own(after - queued - probe),
        probe_cmds=probe.total(),
        polls=polls,
    )


# -- latency --------------------------------------------------------------------------


def percentile(data: list[float], q: int) -> float:
    if len(data) < 2:
        return float("nan")
    return statistics.quantiles(data, n=100, method="inclusive")[q - 1]


@dataclass
class Latency:
    rate: int
    seconds: float
    handler_ms: float
    usage: Usage | None = None
    latencies_ms: list[float] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)  # how late each send left
    missing: int = 0
    sent: int = 0  # jobs sent, warm-up included (for CPU per job)

    def summary(self) -> dict[str, Any]:
        lat, u = self.latencies_ms, self.usage
        p50, p95, p99 = (percentile(lat, q) for q in (50, 95, 99))
        return {
            "rate": self.rate,
            "seconds": self.seconds,
            "samples": len(lat),
            "missing": self.missing,
            "p50_ms": round(p50, 3),
            "p95_ms": round(p95, 3),
            "p99_ms": round(p99, 3),
            "max_ms": round(max(lat), 3) if lat else None,
            "p50_overhead_ms": round(p50 - self.handler_ms, 3),
            "p99_overhead_ms": round(p99 - self.handler_ms, 3),
            "producer_lag_p99_ms": round(percentile(self.lag_ms, 99), 3),
            "worker_cpu_s_per_1k": round(u.worker_s / self.sent * 1000, 3) if u else None,
            "redis_cpu_s_per_1k": round(u.redis_s / self.sent * 1000, 3) if u else None,
            "foreign_cores": round(u.foreign_cores, 2) if u else None,
        }


async def open_loop(
    r: aioredis.Redis,
    *,
    rate: int,
    seconds: float,
    warmup_s: float,
    handler_ms: float,
    meter: CpuMeter,
    send: Callable[[int], Awaitable[Any]],
    done_key: Callable[[int], str],
    done_pattern: str,
) -> Latency:
    """Call ``send(i)`` on a fixed timetable and time each job until it is visible as done.

    Open loop: each send is its own task, so a slow reply never delays the next one (no
    coordinated omission); how late a send left its slot is reported as producer lag.
    "Done" is the first list push to ``done_key(i)``, seen through a keyspace notification,
    so the benchmark sends no command per job besides the enqueue. Latency runs from just
    before ``send`` to the notification's arrival; samples of the first ``warmup_s`` are
    dropped. The benchmark's garbage collector is paused meanwhile: its own pauses showed up
    as 10-20 ms latency spikes that were not the system's.
    """
    db = r.connection_pool.connection_kwargs.get("db", 0)
    prefix = f"__keyspace@{db}__:"
    done_at: dict[bytes, float] = {}
    n = round(rate * seconds)
    all_done = asyncio.Event()
    await r.config_set("notify-keyspace-events", "Kl")
    pubsub = r.pubsub()
    await pubsub.psubscribe(prefix + done_pattern)

    async def listen() -> None:
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is not None and msg["data"] in (b"rpush", b"lpush"):
                done_at.setdefault(msg["channel"], time.perf_counter())
                if len(done_at) >= n:
                    all_done.set()

    listener = asyncio.create_task(listen())
    result = Latency(rate, seconds, handler_ms, sent=n)
    sent: dict[bytes, tuple[float, float]] = {}  # channel -> (due, sent)
    tasks: set[asyncio.Task[Any]] = set()
    gc.collect()
    gc.freeze()
    gc.disable()
    cpu0 = meter.read()
    t0 = time.perf_counter() + 0.05
    try:
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[(prefix + done_key(i)).encode()] = (due, time.perf_counter())
            task = asyncio.create_task(send(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_done.wait(), NOTIFY_WAIT_S)
        result.usage = CpuMeter.usage(cpu0, meter.read())
    finally:
        gc.enable()
        gc.unfreeze()
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await r.config_set("notify-keyspace-events", "")
    for channel, (due, at) in sent.items():
        if due - t0 < warmup_s:
            continue
        end = done_at.get(channel)
        if end is None:
            result.missing += 1
            continue
        result.latencies_ms.append((end - at) * 1000)
        result.lag_ms.append((at - due) * 1000)
    return result


async def sleep_overshoot_ms(sleep_s: float, samples: int = 100) -> float:
    """The median time ``asyncio.sleep(sleep_s)`` really takes here (timer rounding)."""
    took = []
    for _ in range(samples):
        started = time.perf_counter()
        await asyncio.sleep(sleep_s)
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took)
