"""Scenarios 4, 5 and 10: Redis itself is killed, frozen, or comes back empty."""

from __future__ import annotations

import asyncio
import re
import time

from chaos.suite import checker
from chaos.suite.checker import Fault
from chaos.suite.fleet import ReadySample, ReadyWatch
from chaos.suite.stage import Stage

RECONNECT_TIMEOUT_S = 15.0
STALL_S = 4.0  # twice the lease: every lease expires by Redis time while it is frozen
DETECT_WITHIN_S = 5.0
# What counts as reporting an empty Redis (scenario 10): a failing /readyz check other than
# the connectivity one, or any check or log line whose text says so.
EMPTY_WORDS = re.compile(
    r"epoch|empty|wiped|flushed|data (loss|lost)|lost (its|all|the) data|restarted", re.I
)


def no_runtime_exited(stage: Stage) -> None:
    dead = [
        f"{r.slot} pid {r.pid} exit {r.process.returncode}"
        for r in stage.fleet.everyone
        if not r.is_alive
    ]
    stage.check("no runtime exited", not dead, ", ".join(dead) or "all alive")


async def redis_kill(stage: Stage) -> None:
    """4. kill -9 Redis mid-load, restart it from its AOF (everysec) on the same port."""
    await stage.start()
    watch = ReadyWatch(stage.fleet).start()
    try:
        stage.load(300, 6.0)
        await asyncio.sleep(2.0)
        await stage.busiest(at_least=2)  # kill it with jobs running
        at = time.time()
        await asyncio.to_thread(stage.redis.kill)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(stage.redis.start)
        healed = time.time()
        # Up to ~1 s of writes (everysec) may be lost on a machine crash; a kill -9 of the
        # process alone loses none the kernel holds. The slack covers both for the bound.
        stage.record(Fault("Redis kill -9 + AOF restart", at, healed, slack_s=2.0, must_hit=True))
        back = await watch.until_ready(stage.fleet.alive, RECONNECT_TIMEOUT_S)
        stage.check("every runtime reconnected (/readyz 200)", back is not None, f"in {back} s")
        await stage.wait_loads()
    finally:
        await watch.stop()
    no_runtime_exited(stage)


async def redis_stall(stage: Stage) -> None:
    """5. SIGSTOP Redis for 4 s (the seed's stall test): /readyz turns 503 and back,
    nothing exits, nothing is lost."""
    await stage.start()
    watch = ReadyWatch(stage.fleet).start()
    try:
        stage.load(300, 6.0)
        await asyncio.sleep(2.0)
        await stage.busiest(at_least=2)  # freeze it with jobs running
        at = time.time()
        await asyncio.to_thread(stage.redis.pause)
        await asyncio.sleep(STALL_S)
        await asyncio.to_thread(stage.redis.resume)
        healed = time.time()
        stage.record(Fault(f"Redis SIGSTOP {STALL_S:g} s", at, healed, must_hit=True))
        back = await watch.until_ready(stage.fleet.alive, RECONNECT_TIMEOUT_S)
        await stage.wait_loads()
    finally:
        await watch.stop()
    for runtime in stage.fleet.everyone:
        during = [s.status for s in watch.of(runtime.pid, at + 1.0, healed)]
        stage.check(
            f"{runtime.slot}: /readyz 503 while Redis is frozen",
            bool(during) and all(s in (503, None) for s in during) and 503 in during,
            f"statuses {sorted(set(map(str, during)))}",
        )
    stage.check("every runtime back to /readyz 200", back is not None, f"in {back} s after SIGCONT")
    no_runtime_exited(stage)


def _reports_empty(sample: ReadySample) -> bool:
    checks = sample.body.get("checks", {})
    if not isinstance(checks, dict):
        return False
    for name, check in checks.items():
        if not isinstance(check, dict) or check.get("ok", True):
            continue
        if name != "redis" or EMPTY_WORDS.search(str(check)):
            return True
    return False


async def redis_empty(stage: Stage) -> None:
    """10. Redis restarted empty (no persistence): the runtimes must say so within 5 s, by
    /readyz and a log line, never idle silently."""
    await stage.start(persistent=False)
    before = stage.load(100, 2.0)
    await before.wait()
    quiet = await checker.wait_quiet(stage.client, before.accepted, 20)
    stage.check("jobs before the wipe completed", quiet, f"{len(before.accepted)} jobs")
    stage.carry(await checker.records(stage.client, before.accepted))
    watch = ReadyWatch(stage.fleet).start()
    try:
        at = time.time()
        await asyncio.to_thread(stage.redis.kill)
        await asyncio.to_thread(stage.redis.wipe)
        await asyncio.to_thread(stage.redis.start, persistent=False)
        back = time.time()
        await stage.reconnect()
        stage.record(Fault("Redis restarted empty", at, back))
        stage.load(100, 2.0)  # the fleet must go on working on the empty Redis
        await asyncio.sleep(DETECT_WITHIN_S)
    finally:
        await watch.stop()
    for runtime in stage.fleet.alive:
        samples = watch.of(runtime.pid, back, back + DETECT_WITHIN_S)
        flagged = [s for s in samples if _reports_empty(s)]
        seen = sorted({f"{s.status}" for s in samples})
        stage.check(
            f"{runtime.slot}: /readyz reports the empty Redis within {DETECT_WITHIN_S:g} s",
            bool(flagged),
            f"first after {flagged[0].at - back:.2f} s"
            if flagged
            else f"statuses {seen}, no failing check about lost data: the runtime does not "
            "detect a Redis that came back empty (e.g. an epoch key written at start and "
            "watched), so /readyz stays 200 while every job it held is gone",
        )
        lines = [
            line
            for line in stage.fleet.log_lines(runtime)
            if back - 1 <= line.at <= back + DETECT_WITHIN_S and EMPTY_WORDS.search(line.message)
        ]
        stage.check(
            f"{runtime.slot}: a log line reports the empty Redis within {DETECT_WITHIN_S:g} s",
            bool(lines),
            lines[0].message[:160]
            if lines
            else f"no log line matching /{EMPTY_WORDS.pattern}/: the wipe goes unreported",
        )
    await stage.wait_loads()
