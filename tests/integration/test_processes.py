"""Real `runtime serve` processes, killed with real signals, against a real redis-server.

Handlers write a witness file outside Redis (``start id attempt pid`` and ``finish id``
lines, appended and flushed), so what ran survives a SIGKILL and can be checked against
what Redis says.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from runtime.client import Client
from tests.conftest import RedisServer
from tests.integration.serving import ServeProcesses, wait_until

pytestmark = pytest.mark.integration

FAST_LOGS = {"RUNTIME_LOG__LEVEL": "WARNING"}

HANDLERS = """
    import asyncio, os, time
    from runtime import Context, function

    WITNESS = {witness!r}

    def note(line: str) -> None:
        fd = os.open(WITNESS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)

    @function(concurrency={concurrency}, max_in_flight={max_in_flight}, max_recoveries=2)
    async def work(seconds: float, ctx: Context) -> str:
        note(f"start {{ctx.job_id}} {{ctx.attempt}} {{os.getpid()}}")
        await asyncio.sleep(seconds)
        note(f"finish {{ctx.job_id}} {{ctx.attempt}} {{os.getpid()}}")
        return "ok"

    @function(concurrency=20, rate_limit="25/s", rate_burst=5)
    async def paced(x: int, ctx: Context) -> None:
        note(f"start {{ctx.job_id}} {{ctx.attempt}} {{os.getpid()}} {{time.time()}}")
        await asyncio.sleep(0.05)
        note(f"finish {{ctx.job_id}} {{ctx.attempt}} {{os.getpid()}}")

    @function(concurrency=1, max_recoveries=2)
    async def poison(x: int, ctx: Context) -> None:
        note(f"start {{ctx.job_id}} {{ctx.attempt}} {{os.getpid()}}")
        os._exit(17)
"""


class Witness:
    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[list[str]]:
        if not self.path.exists():
            return []
        return [line.split() for line in self.path.read_text().splitlines() if line]

    def starts(self) -> collections.Counter[str]:
        return collections.Counter(p[1] for p in self.lines() if p[0] == "start")

    def finishes(self) -> collections.Counter[str]:
        return collections.Counter(p[1] for p in self.lines() if p[0] == "finish")

    def in_flight(self, pid: int) -> set[str]:
        """Jobs started by ``pid`` with no finish line from it."""
        started = {p[1] for p in self.lines() if p[0] == "start" and p[3] == str(pid)}
        finished = {p[1] for p in self.lines() if p[0] == "finish" and p[3] == str(pid)}
        return started - finished


class Fleet(ServeProcesses):
    """`runtime serve` processes on one functions folder, started and stopped by pid."""

    def __init__(self, tmp: Path, redis_url: str, **limits: int) -> None:
        super().__init__(tmp, redis_url, FAST_LOGS)
        self.witness = Witness(tmp / "witness.log")
        self.folder = tmp / "functions"
        self.folder.mkdir(exist_ok=True)
        source = HANDLERS.format(
            witness=str(self.witness.path),
            concurrency=limits.get("concurrency", 8),
            max_in_flight=limits.get("max_in_flight", 0),
        )
        (self.folder / "handlers.py").write_text(textwrap.dedent(source))

    def spawn(  # type: ignore[override]
        self, redis_url: str | None = None
    ) -> subprocess.Popen[bytes]:
        return super().spawn("--functions", str(self.folder), redis_url=redis_url)


@pytest.fixture
def fleet_factory(tmp_path: Path, redis_url: str) -> Iterator[type[Fleet]]:
    fleets: list[Fleet] = []

    class Made(Fleet):
        def __init__(self, **limits: int) -> None:
            super().__init__(tmp_path, redis_url, **limits)
            fleets.append(self)

    yield Made
    for fleet in fleets:
        fleet.stop_all()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Client]:
    async with Client(redis_url) as c:
        yield c


async def test_sigkill_mid_run_loses_nothing(
    fleet_factory: type[Fleet], client: Client, redis_url: str
) -> None:
    fleet = fleet_factory(concurrency=8)
    ids = [await client.enqueue("work", 0.2) for _ in range(60)]
    victim = fleet.spawn()
    await wait_until(lambda: sum(fleet.witness.starts().values()) >= 12, 20, fleet.logs)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    in_flight_at_kill = fleet.witness.in_flight(victim.pid)
    assert in_flight_at_kill, "the kill should land mid-run"
    fleet.spawn()
    records = [await client.wait(job_id, 30) for job_id in ids]
    assert {r.state for r in records} == {"completed"}
    starts = fleet.witness.starts()
    assert set(starts) == set(ids)
    extra = sum(starts.values()) - len(ids)
    assert extra <= len(in_flight_at_kill), (extra, in_flight_at_kill)
    assert {job for job, n in starts.items() if n > 1} <= in_flight_at_kill
    stats = await client.broker.stats("work")
    assert stats["completed"] == len(ids)  # each job's completion applied exactly once
    assert stats["in_flight"] == 0
    assert stats["recovered"] == len(in_flight_at_kill)


async def test_poison_job_is_dead_lettered_and_others_flow(
    fleet_factory: type[Fleet], client: Client
) -> None:
    """A handler that kills its process: with a supervisor respawning the runtime, the job
    is dead-lettered as worker_crashed after max_recoveries; every other job completes."""
    fleet = fleet_factory(concurrency=4)
    poison = await client.enqueue("poison", 1)
    ids = [await client.enqueue("work", 0.05) for _ in range(40)]
    process = fleet.spawn()
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        record = await client.job(poison)
        if record is not None and record.is_terminal:
            break
        if process.poll() is not None:
            process = fleet.spawn()  # the supervisor's job: respawn what died
        await asyncio.sleep(0.05)
    record = await client.job(poison)
    assert record is not None
    assert (record.state, record.reason, record.recoveries) == ("dead", "worker_crashed", 3)
    if process.poll() is not None:
        process = fleet.spawn()
    records = [await client.wait(job_id, 20) for job_id in ids]
    assert [r.state for r in records] == ["completed"] * len(ids)
    assert fleet.witness.starts()[poison] == 3  # first run plus max_recoveries=2 reruns


async def test_sigterm_drains_with_nothing_lost_or_duplicated(
    fleet_factory: type[Fleet], client: Client
) -> None:
    fleet = fleet_factory(concurrency=8)
    ids = [await client.enqueue("work", 0.3) for _ in range(40)]
    first = fleet.spawn()
    await wait_until(lambda: sum(fleet.witness.starts().values()) >= 10, 20, fleet.logs)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=15) == 0, fleet.logs()
    assert not fleet.witness.in_flight(first.pid), "drain should finish in-flight jobs"
    fleet.spawn()
    records = [await client.wait(job_id, 30) for job_id in ids]
    assert {r.state for r in records} == {"completed"}
    starts = fleet.witness.starts()
    assert sorted(starts) == sorted(ids)
    assert set(starts.values()) == {1}  # no duplicates
    stats = await client.broker.stats("work")
    assert stats["completed"] == len(ids)
    assert stats.get("recovered", 0) == 0 and stats.get("stale_acks", 0) == 0


async def test_max_in_flight_holds_across_two_processes(
    fleet_factory: type[Fleet], client: Client
) -> None:
    fleet = fleet_factory(concurrency=8, max_in_flight=5)
    ids = [await client.enqueue("work", 0.1) for _ in range(50)]
    for process in (fleet.spawn(), fleet.spawn()):
        fleet.wait_ready(process)
    for job_id in ids:
        await client.wait(job_id, 30)
    # Rebuild the intervals from the witness (start/finish order in one append-only file).
    running = peak = 0
    pids = set()
    for parts in fleet.witness.lines():
        running += 1 if parts[0] == "start" else -1
        peak = max(peak, running)
        pids.add(parts[3])
    assert peak <= 5
    assert len(pids) == 2, "both processes should have run jobs"


async def test_starts_with_redis_down_and_becomes_ready(
    fleet_factory: type[Fleet], client: Client, tmp_path: Path
) -> None:
    fleet = fleet_factory()
    server = RedisServer(tmp_path / "late-redis")
    process = fleet.spawn(redis_url=server.url)
    try:
        deadline = time.monotonic() + 15
        status: tuple[int, dict[str, object]] | None = None
        while time.monotonic() < deadline and status is None:
            try:
                status = fleet.ready(process)
            except OSError:
                await asyncio.sleep(0.05)
        assert status is not None, fleet.logs()
        code, body = status
        assert code == 503
        checks = body["checks"]
        assert isinstance(checks, dict) and checks["redis"]["ok"] is False
        assert process.poll() is None
        server.start()
        fleet.wait_ready(process, timeout_s=15)
        async with Client(server.url) as late_client:
            job_id = await late_client.enqueue("work", 0.0)
            assert await late_client.result(job_id, 10) == "ok"
    finally:
        fleet.stop_all()
        server.stop()


async def test_rate_limit_holds_across_processes_through_a_sigkill(
    fleet_factory: type[Fleet], client: Client
) -> None:
    """25/s with a burst of 5 over two runtimes, one SIGKILLed mid-run: no sliding
    one-second window has more than 30 starts, and the run takes as long as the rate says."""
    fleet = fleet_factory()
    ids = [await client.enqueue("paced", i) for i in range(100)]
    victim, survivor = fleet.spawn(), fleet.spawn()
    fleet.wait_ready(victim)
    fleet.wait_ready(survivor)
    await wait_until(lambda: sum(fleet.witness.starts().values()) >= 30, 20, fleet.logs)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    records = [await client.wait(job_id, 30) for job_id in ids]
    assert {r.state for r in records} == {"completed"}
    times = sorted(float(p[4]) for p in fleet.witness.lines() if p[0] == "start")
    assert len(times) >= 100  # re-runs of the killed runtime's jobs spend tokens too
    worst = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert worst <= 25 + 5, worst
    span = times[-1] - times[0]
    expected = (len(times) - 5) / 25
    assert expected * 0.9 <= span <= expected + 3.0, (span, expected)
