"""The runtimes under test: ``runtime serve`` processes with shortened lease timings, each
talking to Redis through its own proxy, started and signalled by pid, with an optional
supervisor that respawns whatever dies (as systemd or Kubernetes would).

Timings: lease 2 s, heartbeat 0.5 s, reclaim every 0.5 s, Redis timeout 0.5 s. The lease
must outlive one heartbeat interval plus one Redis timeout (2 > 0.5 + 0.5), or a healthy
worker loses its job; a dead worker's jobs run again about 2.5 s after it died.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from chaos.suite.redis_server import free_port

LEASE_S = 2.0
TIMINGS = {
    "RUNTIME_WORKER__LEASE_S": str(LEASE_S),
    "RUNTIME_WORKER__HEARTBEAT_S": "0.5",
    "RUNTIME_WORKER__RECLAIM_INTERVAL_S": "0.5",
    "RUNTIME_WORKER__IDLE_POLL_S": "0.5",
    "RUNTIME_WORKER__SHUTDOWN_GRACE_S": "5",
    "RUNTIME_REDIS__TIMEOUT_S": "0.5",
    "RUNTIME_REDIS__CONNECT_TIMEOUT_S": "0.5",
    "RUNTIME_METRICS__REFRESH_S": "0.5",
    "RUNTIME_LOG__LEVEL": "WARNING",
    "RUNTIME_LOG__FORMAT": "json",
    "RUNTIME_HTTP__TOKEN": "chaos-suite",  # so no token file is written
}
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 8.0
SUPERVISE_EVERY_S = 0.05


@dataclass
class Runtime:
    """One ``runtime serve`` process."""

    slot: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    started: float
    signalled: int | None = None  # the last signal the harness sent it

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def is_alive(self) -> bool:
        return self.process.poll() is None


@dataclass(frozen=True, slots=True)
class Death:
    slot: str
    pid: int
    at: float  # unix time it was noticed
    returncode: int
    signalled: int | None  # what the harness sent it, None for a death of its own


@dataclass(frozen=True, slots=True)
class LogLine:
    at: float
    level: str
    message: str


@dataclass
class Slot:
    """A place in the fleet: a name and the Redis URL (its proxy) its processes use."""

    name: str
    redis_url: str
    current: Runtime | None = None
    history: list[Runtime] = field(default_factory=list)


class Fleet:
    def __init__(self, folder: Path, config_dir: Path, logs: Path) -> None:
        self.folder = folder
        self.config_dir = config_dir
        self.logs_dir = logs
        self.slots: dict[str, Slot] = {}
        self.deaths: list[Death] = []
        self.is_supervised = False
        self.env: dict[str, str] = {}  # RUNTIME_* settings of a scenario, over TIMINGS
        self._supervisor: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None

    # -- processes ---------------------------------------------------------------------

    def add_slot(self, name: str, redis_url: str) -> Slot:
        self.slots[name] = Slot(name, redis_url)
        return self.slots[name]

    def spawn(self, slot_name: str) -> Runtime:
        slot = self.slots[slot_name]
        port = free_port()
        # Only the suite's settings: a RUNTIME_* variable of the caller must not leak in.
        inherited = {k: v for k, v in os.environ.items() if not k.upper().startswith("RUNTIME_")}
        env = {**inherited, **TIMINGS, **self.env, "RUNTIME_CONFIG_DIR": str(self.config_dir)}
        log = self.logs_dir / f"{slot.name}-{len(slot.history)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603 — argv built here from sys.executable and fixed options, no shell
                [
                    sys.executable, "-m", "runtime.cli.main", "serve",
                    "--functions", str(self.folder), "--port", str(port),
                    "--redis", slot.redis_url,
                ],
                cwd=self.logs_dir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        runtime = Runtime(slot.name, process, port, log, time.time())
        slot.current = runtime
        slot.history.append(runtime)
        return runtime

    def runtime(self, slot_name: str) -> Runtime:
        current = self.slots[slot_name].current
        assert current is not None, f"no process in slot {slot_name}"  # noqa: S101 — test-harness invariant, the message names the misuse
        return current

    @property
    def everyone(self) -> list[Runtime]:
        return [r for slot in self.slots.values() for r in slot.history]

    @property
    def alive(self) -> list[Runtime]:
        return [r for r in self.everyone if r.is_alive]

    def signal(self, runtime: Runtime, sig: int) -> None:
        runtime.signalled = sig
        if runtime.is_alive:
            os.kill(runtime.pid, sig)

    async def start(self, timeout_s: float = READY_TIMEOUT_S, *, ready: bool = True) -> None:
        """Spawn one process per slot and wait until every one answers /readyz 200 (or,
        with ``ready`` False, answers it at all: a scenario that expects it unready)."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3.0))
        for name in self.slots:
            self.spawn(name)
        await asyncio.gather(*(self.wait_ready(name, timeout_s, ready) for name in self.slots))

    async def wait_ready(
        self, slot_name: str, timeout_s: float = READY_TIMEOUT_S, ready: bool = True
    ) -> Runtime:
        """Until the slot's process is ready (with ``ready`` False: until it answers); a
        process that dies starting (a port taken between free_port() and its bind) is
        replaced, at most twice."""
        deadline = time.monotonic() + timeout_s
        replaced = 0
        while time.monotonic() < deadline:
            runtime = self.runtime(slot_name)
            if not runtime.is_alive:
                if not self.is_supervised:  # else the supervisor respawns it
                    if replaced == 2:
                        raise RuntimeError(f"{slot_name} keeps dying:\n{self.tail(runtime)}")
                    replaced += 1
                    self.spawn(slot_name)
                await asyncio.sleep(SUPERVISE_EVERY_S)
                continue
            status = await self.readyz(runtime)
            if status is not None and (status[0] == 200 or not ready):
                return runtime
            await asyncio.sleep(0.05)
        raise RuntimeError(
            f"{slot_name} not ready in {timeout_s} s:\n{self.tail(self.runtime(slot_name))}"
        )

    async def readyz(self, runtime: Runtime) -> tuple[int, dict[str, Any]] | None:
        """(status, body) of GET /readyz, or None when the process does not answer."""
        assert self._http is not None, "fleet not started"  # noqa: S101 — test-harness invariant, the message names the misuse
        try:
            async with self._http.get(f"http://127.0.0.1:{runtime.port}/readyz") as response:
                body = await response.json(content_type=None)
                return response.status, body if isinstance(body, dict) else {}
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def enqueue_http(
        self, runtime: Runtime, function: str, payload: Any
    ) -> tuple[int, str | None] | None:
        """POST /v1/functions/<function>/jobs: (status, the job id of a 202), or None when
        the process does not answer."""
        assert self._http is not None, "fleet not started"  # noqa: S101 — test-harness invariant, the message names the misuse
        url = f"http://127.0.0.1:{runtime.port}/v1/functions/{function}/jobs"
        headers = {"Authorization": f"Bearer {TIMINGS['RUNTIME_HTTP__TOKEN']}"}
        try:
            async with self._http.post(url, json=payload, headers=headers) as response:
                body = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        job_id = body.get("job_id") if isinstance(body, dict) else None
        return status, job_id if isinstance(job_id, str) else None

    # -- supervision -------------------------------------------------------------------

    def supervise(self) -> None:
        """Respawn any process of a slot that dies, and record each death."""
        self.is_supervised = True
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(), name="supervisor")

    async def _supervise(self) -> None:
        while True:
            self.reap()
            await asyncio.sleep(SUPERVISE_EVERY_S)

    def reap(self) -> list[Death]:
        """Record the deaths of current processes; respawn them when supervised."""
        found = []
        for slot in self.slots.values():
            runtime = slot.current
            if runtime is None or runtime.is_alive:
                continue
            code = runtime.process.returncode
            death = Death(slot.name, runtime.pid, time.time(), code, runtime.signalled)
            self.deaths.append(death)
            found.append(death)
            slot.current = None
            if self.is_supervised:
                self.spawn(slot.name)
        return found

    # -- logs --------------------------------------------------------------------------

    def log_lines(self, runtime: Runtime) -> list[LogLine]:
        """The JSON log lines of one process (other output is kept as level "raw")."""
        lines = []
        for text in runtime.log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(text)
                at = datetime.datetime.fromisoformat(record["ts"].replace("Z", "+00:00"))
                lines.append(LogLine(at.timestamp(), str(record["level"]), str(record["msg"])))
            except (ValueError, KeyError, TypeError, AttributeError):
                lines.append(LogLine(0.0, "raw", text))
        return lines

    def tail(self, runtime: Runtime, count: int = 15) -> str:
        lines = runtime.log.read_text(errors="replace").splitlines()[-count:]
        return f"--- {runtime.log.name} (pid {runtime.pid})\n" + "\n".join(lines)

    # -- stop --------------------------------------------------------------------------

    async def stop(self) -> None:
        """SIGTERM every live process by pid, SIGKILL what is left after the grace."""
        self.is_supervised = False
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        for runtime in self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(runtime.pid, signal.SIGTERM)
        await asyncio.to_thread(_wait_all, self.alive, STOP_TIMEOUT_S)
        for runtime in self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(runtime.pid, signal.SIGKILL)
        for runtime in self.everyone:
            runtime.process.wait(STOP_TIMEOUT_S)
        if self._http is not None:
            await self._http.close()
            self._http = None


def _wait_all(runtimes: list[Runtime], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for runtime in runtimes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            runtime.process.wait(max(0.0, deadline - time.monotonic()))


@dataclass(frozen=True, slots=True)
class ReadySample:
    at: float
    slot: str
    pid: int
    status: int | None  # None: no answer
    body: dict[str, Any]


class ReadyWatch:
    """Samples GET /readyz of every live runtime, every ``interval_s``, in the background."""

    def __init__(self, fleet: Fleet, interval_s: float = 0.1) -> None:
        self.fleet = fleet
        self.interval_s = interval_s
        self.samples: list[ReadySample] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> ReadyWatch:
        self._task = asyncio.create_task(self._run(), name="ready-watch")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        async def answered(runtime: Runtime) -> tuple[Any, float]:
            answer = await self.fleet.readyz(runtime)
            return answer, time.time()  # this runtime's own answer time

        while True:
            alive = self.fleet.alive
            # Each sample is timed when its own answer came: one runtime slow to answer
            # (waiting on a frozen Redis) must not date another's earlier answer after it.
            answers = await asyncio.gather(*(answered(r) for r in alive))
            for runtime, (answer, at) in zip(alive, answers, strict=True):
                status, body = answer if answer is not None else (None, {})
                self.samples.append(ReadySample(at, runtime.slot, runtime.pid, status, body))
            await asyncio.sleep(self.interval_s)

    def of(self, pid: int, since: float, until: float = float("inf")) -> list[ReadySample]:
        return [s for s in self.samples if s.pid == pid and since <= s.at <= until]

    async def ready_since(self, pids: list[int], since: float, timeout_s: float) -> float | None:
        """Seconds from ``since`` (unix time) until every runtime of ``pids`` had answered
        /readyz 200 at or after it, waiting up to ``timeout_s`` from now; None if not.
        A runtime that never turned unready counts from its first sample after ``since``."""
        deadline = time.monotonic() + timeout_s
        while True:
            firsts = []
            for pid in pids:
                ready = [s.at for s in self.of(pid, since) if s.status == 200]
                firsts.append(ready[0] if ready else None)
            if all(at is not None for at in firsts):
                return round(max(at - since for at in firsts if at is not None), 2)
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)

    async def until_ready(self, runtimes: list[Runtime], timeout_s: float) -> float | None:
        """Seconds until every one of ``runtimes`` answered 200 (from now), None if not."""
        began = time.time()
        while time.time() - began < timeout_s:
            if all(any(s.status == 200 for s in self.of(r.pid, began)) for r in runtimes):
                return round(time.time() - began, 2)
            await asyncio.sleep(0.05)
        return None
