"""Scenarios 1, 2, 3 and 9: the runtimes' own processes die, drain or are killed by a job."""

from __future__ import annotations

import asyncio
import signal
import time

from chaos.suite.checker import Fault, Figures
from chaos.suite.fleet import Runtime
from chaos.suite.stage import Stage
from chaos.suite.witness import POISON_MAX_RECOVERIES

EXIT_TIMEOUT_S = 15.0


def _no_lease_expired(f: Figures) -> tuple[bool, str]:
    recovered, stale = f.counters.get("recovered", 0), f.counters.get("stale_acks", 0)
    return recovered == 0 and stale == 0, f"recovered {recovered}, stale acks {stale}"


def _no_duplicate(f: Figures) -> tuple[bool, str]:
    return f.extra_starts == 0, f"{f.extra_starts} extra start(s)"


async def baseline(stage: Stage) -> None:
    """1. No faults: every job runs exactly once."""
    await stage.start()
    stage.load(300, 5.0)
    await stage.wait_loads()
    stage.expect("0 duplicates", _no_duplicate)
    stage.expect("no lease expired, no stale ack", _no_lease_expired)


async def sigkill(stage: Stage) -> None:
    """2. SIGKILL the busiest runtime mid-flight three times; the supervisor respawns it."""
    await stage.start()
    stage.fleet.supervise()
    stage.load(400, 7.0)
    for i in range(3):
        await asyncio.sleep(1.0 if i == 0 else 1.5)
        victim = await stage.busiest(at_least=2)
        at = time.time()
        stage.fleet.signal(victim, signal.SIGKILL)
        pids = frozenset({victim.pid})
        stage.record(Fault(f"SIGKILL {victim.slot} #{i + 1}", at, at, pids, must_hit=True))
    await stage.wait_loads()
    deaths = stage.fleet.deaths
    unexpected = [d for d in deaths if d.signalled != signal.SIGKILL]
    stage.check(
        "only the harness's SIGKILLs killed runtimes, each respawned",
        len(deaths) == 3 and not unexpected and len(stage.fleet.alive) == len(stage.fleet.slots),
        f"{len(deaths)} death(s), unexpected {unexpected}",
    )
    stage.expect(
        "the killed runtimes' jobs were reclaimed",
        lambda f: (f.counters.get("recovered", 0) > 0, f"recovered {f.counters.get('recovered')}"),
    )


async def _wait_exit(runtime: Runtime, timeout_s: float) -> int | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = runtime.process.poll()
        if code is not None:
            return code
        await asyncio.sleep(0.02)
    return None


async def sigterm(stage: Stage) -> None:
    """3. SIGTERM the busiest runtime twice (a rolling restart): it drains, exits 0, and
    nothing runs twice."""
    await stage.start()
    stage.fleet.supervise()
    stage.load(300, 6.0)
    for i in range(2):
        await asyncio.sleep(1.5)
        victim = await stage.busiest(at_least=2)
        at = time.time()
        stage.fleet.signal(victim, signal.SIGTERM)
        code = await _wait_exit(victim, EXIT_TIMEOUT_S)
        stage.record(
            Fault(
                f"SIGTERM {victim.slot} #{i + 1}",
                at,
                time.time(),
                frozenset({victim.pid}),
                allows_reruns=False,
                must_hit=True,
            )
        )
        stage.check(f"SIGTERM #{i + 1}: {victim.slot} exited 0", code == 0, f"exit status {code}")
        left = stage.witness.running(victim.pid)
        stage.check(
            f"SIGTERM #{i + 1}: {victim.slot} finished its running jobs",
            not left,
            f"{len(left)} started and never finished",
        )
    await stage.wait_loads()
    stage.expect("0 duplicates", _no_duplicate)
    stage.expect("no lease expired, no stale ack", _no_lease_expired)


async def poison(stage: Stage) -> None:
    """9. A job whose handler kills its process: dead-lettered as worker_crashed after
    max_recoveries; everything else completes."""
    await stage.start()
    stage.fleet.supervise()
    poison_load = stage.load(1, 0.1, function="poison", prefix="s9-poison")
    stage.load(250, 6.0)
    await stage.wait_loads()
    (job,) = poison_load.accepted
    deadline = time.monotonic() + 45
    record = await stage.client.job(job)
    while time.monotonic() < deadline and (record is None or not record.is_terminal):
        await asyncio.sleep(0.1)
        record = await stage.client.job(job)
    for death in stage.fleet.deaths:
        if death.signalled is None:
            # Noticed within one supervision period of the crash.
            name, pids = f"crash {death.slot} pid {death.pid}", frozenset({death.pid})
            stage.record(Fault(name, death.at - 0.1, death.at, pids, must_hit=True))
    crashes = [d for d in stage.fleet.deaths if d.signalled is None]
    state = None if record is None else (record.state, record.reason, record.recoveries)
    expected = ("dead", "worker_crashed", POISON_MAX_RECOVERIES + 1)
    stage.check("the poison job is dead-lettered as worker_crashed", state == expected, f"{state}")
    stage.check(
        "it killed its runtime once per run, each respawned",
        len(crashes) == POISON_MAX_RECOVERIES + 1 and all(d.returncode == 17 for d in crashes),
        f"{len(crashes)} crash(es): {[d.returncode for d in crashes]}",
    )
    stage.check(
        "it ran max_recoveries + 1 times",
        stage.witness.starts()[job] == POISON_MAX_RECOVERIES + 1,
        f"{stage.witness.starts()[job]} start(s)",
    )
    stage.expect(
        "only the poison job is dead",
        lambda f: (f.dead == {"worker_crashed": 1}, f"dead {f.dead}"),
    )
