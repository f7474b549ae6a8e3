"""One scenario's world, built and torn down around it: a redis-server, one proxy per
runtime, the runtimes, the witness, the loads; the faults the scenario injects and the
checks it makes; then the figures at quiescence.

A scenario body only drives: start the stage, start loads, inject faults (recording each
as a ``Fault``), add the checks particular to it. ``finish()`` waits for quiescence and adds
the checks every scenario shares; ``close()`` stops every process by pid, whatever happened.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chaos.proxy.testing import Target
from chaos.suite import checker
from chaos.suite.checker import Fault, Figures
from chaos.suite.fleet import Fleet, ReadyWatch, Runtime
from chaos.suite.load import CLIENT_SETTINGS, Load
from chaos.suite.network import Link, Network
from chaos.suite.redis_server import RedisServer
from chaos.suite.witness import Witness, handler_source
from runtime.client import Client
from runtime.jobs.records import JobRecord

QUIET_TIMEOUT_S = 30.0
READY_WAIT_S = 15.0  # how long after a heal the time to ready is still measured
Expectation = Callable[[Figures], tuple[bool, str]]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


def _unready(watch: ReadyWatch, pid: int, since: float, slot: str) -> str:
    """What one runtime's /readyz said since ``since``: its statuses and failing checks."""
    samples = watch.of(pid, since)
    statuses = sorted({str(s.status) for s in samples})
    checks = samples[-1].body.get("checks", {}) if samples else {}
    failing = sorted(
        str(name)
        for name, c in (checks.items() if isinstance(checks, dict) else ())
        if isinstance(c, dict) and c.get("ok") is False
    )
    return f"{slot}: statuses {statuses}, failing at the end {failing}"


class Stage:
    def __init__(self, number: int, root: Path, target: Target, rng: random.Random) -> None:
        self.number = number
        self.dir = root / f"scenario-{number}"
        self.dir.mkdir(parents=True)
        self.rng = rng
        self.redis = RedisServer(self.dir / "redis", bind_host=target.upstream_bind_host)
        self.network = Network(target, f"chaos-suite-{root.name}-s{number}")
        self.witness = Witness(self.dir / "witness.log")
        for sub in ("functions", "config", "logs"):
            (self.dir / sub).mkdir()
        (self.dir / "functions" / "chaos_handlers.py").write_text(handler_source(self.witness.path))
        self.fleet = Fleet(self.dir / "functions", self.dir / "config", self.dir / "logs")
        self.links: dict[str, Link] = {}
        self.loads: list[Load] = []
        self._load_count = 0  # for unique id prefixes, even when loads are set aside
        self.faults: list[Fault] = []
        self.checks: list[Check] = []
        self.notes: list[str] = []
        # Terminal records read before Redis was wiped (scenario 10), counted as found then.
        self.carried: dict[str, JobRecord] = {}
        self._expectations: list[tuple[str, Expectation]] = []
        self._client: Client | None = None
        self.client_settings = CLIENT_SETTINGS  # of the harness's client and the loads
        self.extra_accepted: dict[str, float] = {}  # acknowledged outside a Load (HTTP)
        self.ready_s: list[float | None] = []  # heal -> every runtime ready, per heal

    # -- building ----------------------------------------------------------------------

    async def start(
        self,
        runtimes: int = 2,
        *,
        persistent: bool = True,
        redis_settings: dict[str, str] | None = None,
        ready: bool = True,
    ) -> None:
        """Start Redis (with ``redis_settings`` as ``--name value``), one proxy and one
        runtime per slot, and wait for /readyz 200 (with ``ready`` False: any answer)."""
        self.redis.settings.update(redis_settings or {})
        await asyncio.to_thread(self.redis.start, persistent=persistent)
        for i in range(runtimes):
            name = f"rt{i}"
            self.links[name] = await self.network.link(name, self.redis.port)
            self.fleet.add_slot(name, self.links[name].url)
        await self.fleet.start(ready=ready)

    async def loader_link(self) -> Link:
        """A proxy for the load generator, for scenarios that cut the callers' link too."""
        self.links["loader"] = await self.network.link("loader", self.redis.port)
        return self.links["loader"]

    @property
    def url(self) -> str:
        """Redis straight, with no proxy: for the harness's client and the loads."""
        return self.redis.url

    @property
    def client(self) -> Client:
        """The harness's own client, straight to Redis (no proxy)."""
        if self._client is None:
            self._client = Client(self.url, redis_settings=self.client_settings)
        return self._client

    async def reconnect(self) -> None:
        """Drop the harness client (after Redis restarted, its pool holds dead sockets)."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    def load(
        self,
        count: int,
        over_s: float,
        *,
        seconds: tuple[float, float] = (0.01, 0.05),
        via: Link | None = None,
        function: str = "work",
        prefix: str | None = None,
    ) -> Load:
        self._load_count += 1
        load = Load(
            via.url if via is not None else self.url,
            prefix or f"s{self.number}-{self._load_count}",
            count,
            over_s,
            seconds=seconds,
            rng=self.rng,
            function=function,
            settings=self.client_settings,
        )
        self.loads.append(load)
        load.start()
        return load

    # -- driving -----------------------------------------------------------------------

    async def busiest(self, at_least: int = 2, timeout_s: float = 10.0) -> Runtime:
        """The live runtime running the most jobs, once one runs ``at_least`` of them."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            runs = [run for run in self.witness.runs() if run.finish is None]
            best: tuple[int, Runtime] | None = None
            for slot in self.fleet.slots.values():
                current = slot.current
                if current is None or not current.is_alive:
                    continue
                n = sum(1 for run in runs if run.pid == current.pid)
                if n >= at_least and (best is None or n > best[0]):
                    best = (n, current)
            if best is not None:
                return best[1]
            await asyncio.sleep(0.01)
        raise RuntimeError(f"no runtime had {at_least} job(s) running within {timeout_s} s")

    def record(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, bool(ok), detail))
        return bool(ok)

    def expect(self, name: str, predicate: Expectation) -> None:
        """A check on the final figures, made by ``finish()``."""
        self._expectations.append((name, predicate))

    def note(self, text: str) -> None:
        self.notes.append(text)

    async def ready_after(self, watch: ReadyWatch, healed: float, within_s: float) -> float | None:
        """Check that every live runtime answers /readyz 200 within ``within_s`` of Redis
        recovering at ``healed``; the time is kept as the ``ready s`` figure (waited for up
        to READY_WAIT_S, so a slow recovery is measured, not just failed)."""
        alive = self.fleet.alive
        taken = await watch.ready_since(
            [r.pid for r in alive], healed, healed + READY_WAIT_S - time.time()
        )
        self.ready_s.append(taken)
        detail = f"after {taken} s"
        if taken is None or taken > within_s:
            detail += "; " + "; ".join(_unready(watch, r.pid, healed, r.slot) for r in alive)
        self.check(
            f"every runtime /readyz 200 within {within_s:g} s of Redis recovering",
            taken is not None and taken <= within_s,
            detail,
        )
        return taken

    async def wait_loads(self) -> None:
        await asyncio.gather(*(load.wait() for load in self.loads))

    # -- finishing ---------------------------------------------------------------------

    @property
    def accepted(self) -> dict[str, float]:
        out: dict[str, float] = dict(self.extra_accepted)
        for load in self.loads:
            out.update(load.accepted)
        return out

    def carry(self, records: dict[str, JobRecord | None]) -> None:
        """Keep the terminal records of jobs about to vanish with Redis's data."""
        self.carried.update({job: r for job, r in records.items() if r and r.is_terminal})

    async def finish(self) -> Figures:
        """Wait for quiescence, compute the figures, add the shared checks."""
        await self.wait_loads()
        accepted = self.accepted
        live = [job for job in accepted if job not in self.carried]
        quiet = await checker.wait_quiet(self.client, live, QUIET_TIMEOUT_S)
        found: dict[str, JobRecord | None] = dict(self.carried)
        found.update(await checker.records(self.client, live))
        stats = await checker.queue_stats(self.client)
        figures = checker.figures(
            accepted=accepted,
            found=found,
            stats=stats,
            completed_in_redis=await checker.completed_hashes(self.client),
            witness=self.witness,
            faults=self.faults,
        )
        figures.unacknowledged = sum(len(load.unacknowledged) for load in self.loads)
        figures.enqueue_retries = sum(load.retries for load in self.loads)
        figures.enqueue_replays = sum(load.replayed for load in self.loads)
        figures.dead_runtimes = sum(r.process.poll() not in (None, 0) for r in self.fleet.everyone)
        if self.ready_s:
            known = [s for s in self.ready_s if s is not None]
            figures.ready_s = max(known) if len(known) == len(self.ready_s) else None
        self._shared_checks(figures, quiet=quiet)
        for name, predicate in self._expectations:
            self.check(name, *predicate(figures))
        return figures

    def _shared_checks(self, f: Figures, *, quiet: bool) -> None:
        lost = f"{f.lost} lost: {', '.join(f.lost_jobs)}" if f.lost else "0 lost"
        self.check("nothing lost", f.lost == 0, lost)
        self.check("every enqueue acknowledged", f.unacknowledged == 0, f"{f.unacknowledged}")
        self.check(
            "extra starts within the bound",
            f.extra_starts <= f.bound,
            f"{f.extra_starts} extra start(s), bound {f.bound}",
        )
        self.check(
            "every re-run was in flight at a fault",
            not f.unexplained,
            ", ".join(f.unexplained[:10]) or "none unexplained",
        )
        self.check("no worker_crashed without a dead worker", *checker.crashes_explained(f))
        self.check(
            "no completion applied twice",
            f.double_completions == 0,
            f"stats completed - completed job hashes = {f.double_completions}",
        )
        self.check(
            "nothing left in ready, leased or delayed",
            quiet and not any(f.leftovers.values()),
            f"{f.leftovers}",
        )
        for fault in f.faults:
            if fault["must_hit"]:
                self.check(
                    f"{fault['name']} hit jobs in flight",
                    fault["in_flight"] > 0,
                    f"{fault['in_flight']} in flight",
                )

    async def close(self) -> None:
        """Stop everything this stage started, by pid, whatever state it is in."""
        for load in self.loads:
            await load.stop()
        try:
            await self.fleet.stop()
        finally:
            try:
                await self.reconnect()
            finally:
                try:
                    await self.network.close()
                finally:
                    await asyncio.to_thread(self.redis.stop)
