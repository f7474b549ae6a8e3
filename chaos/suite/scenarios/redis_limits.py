"""Scenarios 12, 13 and 14: Redis refuses writes (out of memory), is cut off for longer than
the lease, or is configured to evict keys.

In 12 and 13 the jobs run longer than the lease, so they live only while their heartbeats
do: a heartbeat loop that a Redis error ended shows as re-runs of jobs that were in flight at
no fault (unexplained) and, in the end, as ``worker_crashed`` with no worker dead. After the
heal, every runtime must be ready again within 2 s, and a second load of long jobs, all
started after the heal, must run exactly once each.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

from chaos.suite.checker import Fault, Figures
from chaos.suite.fleet import LEASE_S, LogLine, ReadySample, ReadyWatch, Runtime
from chaos.suite.scenarios.redis_faults import no_runtime_exited
from chaos.suite.stage import Stage
from runtime.errors import BrokerError

READY_WITHIN_S = 2.0  # Redis recovered -> every runtime ready (issue 13)
LONG_S = (LEASE_S + 1.0, LEASE_S + 2.5)  # every job outlives its lease several heartbeats over
LONG_JOBS, AFTER_JOBS = 32, 16  # 16 slots in the fleet: the first load keeps them all busy
OOM_S = 3.0  # longer than the lease: leases expire by Redis time while writes are refused
FILLER_KEY = "chaos:filler"
HEADROOM_BYTES = 16 << 20  # maxmemory = used memory + this; the filler is twice as big
PROBE_KEY = "chaos:probe"
OUTAGE_S = LEASE_S + 3.0
DETECT_WITHIN_S = 5.0
EVICTING = {"maxmemory": "256mb", "maxmemory-policy": "allkeys-lru"}
POLICY_WORDS = re.compile(r"maxmemory|evict|allkeys-lru|noeviction", re.I)


async def _long_jobs_running(stage: Stage) -> None:
    stage.load(LONG_JOBS, 3.0, seconds=LONG_S, prefix=f"s{stage.number}-before")
    await stage.busiest(at_least=2)
    await asyncio.sleep(1.0)  # the runs are a heartbeat or two old when the fault hits


async def _write_refused(stage: Stage) -> str | None:
    """The error of a plain write straight to Redis, None if it was applied."""
    try:
        await stage.client.broker.redis.set(PROBE_KEY, "1")
    except BrokerError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def _http_accepts(stage: Stage, runtime: Runtime, healed: float) -> float | None:
    """Seconds from the heal until ``runtime`` answers an HTTP enqueue with 202; the job it
    made joins the accepted ones. Every other answer is noted."""
    seen: set[str] = set()
    while time.time() < healed + READY_WITHIN_S * 5:
        answer = await stage.fleet.enqueue_http(runtime, "work", 0.01)
        if answer is not None and answer[0] == 202 and answer[1] is not None:
            stage.extra_accepted[answer[1]] = time.time()
            if seen:
                stage.note(f"{runtime.slot}: HTTP enqueue answered {sorted(seen)} before 202")
            return round(time.time() - healed, 2)
        seen.add(str(answer[0] if answer is not None else None))
        await asyncio.sleep(0.1)
    stage.note(f"{runtime.slot}: HTTP enqueue answered {sorted(seen)}, never 202")
    return None


async def _after_heal(stage: Stage, watch: ReadyWatch, healed: float) -> None:
    await stage.ready_after(watch, healed, READY_WITHIN_S)
    stage.load(AFTER_JOBS, 2.0, seconds=LONG_S, prefix=f"s{stage.number}-after")

    def one_rerun_at_most(_: Figures) -> tuple[bool, str]:
        # The bound is a sum over jobs: a job run three times hides behind others that
        # ran once. One fault may cost a job one re-run, never two (a stale heartbeat reply
        # that cancels the newer run of the same job costs a second).
        over = sorted(job for job, n in stage.witness.starts().items() if n > 2)
        return not over, f"{len(over)} job(s) started 3 or more times {over[:5]}"

    stage.expect("no job re-run more than once for the one fault", one_rerun_at_most)


async def oom(stage: Stage) -> None:
    """12. Redis out of memory (noeviction) for 3 s while long jobs run: a filler key written
    straight to Redis puts used memory over ``maxmemory``, so every write of the runtimes
    fails with ``OOM command not allowed``; then it is deleted."""
    await stage.start()
    redis = stage.client.broker.redis
    await redis.config_set("maxmemory-policy", "noeviction")
    watch = ReadyWatch(stage.fleet).start()
    try:
        await _long_jobs_running(stage)
        used = int((await redis.info("memory"))["used_memory"])
        await redis.config_set("maxmemory", used + HEADROOM_BYTES)
        at = time.time()
        await redis.setrange(FILLER_KEY, 2 * HEADROOM_BYTES - 1, "x")
        refused = await _write_refused(stage)
        stage.check("writes refused: Redis out of memory", bool(refused), f"{refused}")
        stage.note(f"a plain write while memory was full: {refused}")
        await asyncio.sleep(OOM_S)
        await redis.delete(FILLER_KEY)
        healed = time.time()
        stage.check("writes applied again", await _write_refused(stage) is None)
        # No re-run allowed: heartbeats renew leases while memory is full (extend.lua runs
        # with allow-oom), so no lease lapses under a running job however long the episode.
        stage.record(
            Fault(f"Redis OOM {OOM_S:g} s", at, healed, allows_reruns=False, must_hit=True)
        )
        alive = stage.fleet.alive
        accepts = asyncio.gather(*(_http_accepts(stage, r, healed) for r in alive))
        _, times = await asyncio.gather(_after_heal(stage, watch, healed), accepts)
        for runtime, taken in zip(alive, times, strict=True):
            stage.check(
                f"{runtime.slot}: an HTTP enqueue accepted (202) within {READY_WITHIN_S:g} s "
                "of the memory being freed",
                taken is not None and taken <= READY_WITHIN_S,
                f"after {taken} s",
            )
        await stage.wait_loads()
    finally:
        await watch.stop()
    no_runtime_exited(stage)


async def outage(stage: Stage) -> None:
    """13. Both runtimes cut off from Redis (a blackhole on their links, both directions) for
    the lease plus 3 s while long jobs run, then healed."""
    await stage.start()
    watch = ReadyWatch(stage.fleet).start()
    try:
        await _long_jobs_running(stage)
        links = [stage.links[name] for name in stage.fleet.slots]
        at = time.time()
        for link in links:
            await link.add_toxic("timeout", stream="upstream", attributes={"timeout": 0}, name="up")
            await link.add_toxic("timeout", attributes={"timeout": 0}, name="down")
        await asyncio.sleep(OUTAGE_S)
        for link in links:
            await link.clear()
        healed = time.time()
        stage.record(Fault(f"Redis cut off {OUTAGE_S:g} s", at, healed, must_hit=True))
        await _after_heal(stage, watch, healed)
        await stage.wait_loads()
    finally:
        await watch.stop()
    for runtime in stage.fleet.everyone:
        during = [s.status for s in watch.of(runtime.pid, at + 1.5, healed)]
        stage.check(
            f"{runtime.slot}: /readyz 503 while cut off",
            503 in during and 200 not in during,
            f"statuses {sorted(set(map(str, during)))}",
        )
    no_runtime_exited(stage)


def flags_policy(sample: ReadySample) -> bool:
    """A /readyz answer 503 whose failing ``redis_config`` check names allkeys-lru."""
    checks = sample.body.get("checks", {})
    check = checks.get("redis_config") if isinstance(checks, dict) else None
    return (
        sample.status == 503
        and isinstance(check, dict)
        and check.get("ok") is False
        and "allkeys-lru" in json.dumps(check)
    )


async def _policy_reported(stage: Stage, watch: ReadyWatch, since: float, when: str) -> None:
    """Each runtime's /readyz is 503 with a failing ``redis_config`` check naming the policy
    within DETECT_WITHIN_S of ``since``."""
    deadline = since + DETECT_WITHIN_S
    while time.time() < deadline:
        if all(any(map(flags_policy, watch.of(r.pid, since))) for r in stage.fleet.alive):
            break
        await asyncio.sleep(0.05)
    for runtime in stage.fleet.alive:
        samples = watch.of(runtime.pid, since, deadline)
        flagged = [s for s in samples if flags_policy(s)]
        last = samples[-1].body.get("checks") if samples else None
        stage.check(
            f"{runtime.slot}: /readyz 503, check redis_config names allkeys-lru ({when})",
            bool(flagged),
            f"after {flagged[0].at - since:.2f} s"
            if flagged
            else f"statuses {sorted({str(s.status) for s in samples})} within "
            f"{DETECT_WITHIN_S:g} s, last checks {json.dumps(last)[:200]}",
        )


def policy_errors(lines: list[LogLine], since: float) -> list[str]:
    """ERROR (or worse) log lines about the eviction policy since ``since``. The runtime's
    JSON logs spell levels in lower case."""
    return [
        line.message
        for line in lines
        if line.at >= since and line.level.upper() in ("ERROR", "CRITICAL")
        if POLICY_WORDS.search(line.message)
    ]


def _policy_lines(stage: Stage, runtime: Runtime, since: float) -> list[str]:
    return policy_errors(stage.fleet.log_lines(runtime), since)


async def eviction_policy(stage: Stage) -> None:
    """14. Redis runs with ``maxmemory-policy allkeys-lru``: each runtime says so at start (an
    ERROR log line, /readyz 503 with a failing ``redis_config`` check), is ready within 2 s
    of the policy set to ``noeviction``, and says so again when it is set back at run time."""
    await stage.start(redis_settings=EVICTING, ready=False)
    started = min(r.started for r in stage.fleet.everyone)
    redis = stage.client.broker.redis
    watch = ReadyWatch(stage.fleet).start()
    try:
        stage.load(100, 4.0)
        await _policy_reported(stage, watch, started, "at start")
        for runtime in stage.fleet.alive:
            deadline = time.monotonic() + DETECT_WITHIN_S
            while not (lines := _policy_lines(stage, runtime, started)):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            stage.check(
                f"{runtime.slot}: an ERROR log line about the eviction policy at start",
                bool(lines),
                lines[0][:160] if lines else f"no ERROR line matching /{POLICY_WORDS.pattern}/",
            )
        await redis.config_set("maxmemory-policy", "noeviction")
        await stage.ready_after(watch, time.time(), READY_WITHIN_S)
        at = time.time()
        await redis.config_set("maxmemory-policy", "allkeys-lru")
        await _policy_reported(stage, watch, at, "set at run time")
        logged = any(_policy_lines(stage, r, at) for r in stage.fleet.alive)
        stage.note(f"an ERROR line after the policy was set at run time: {logged}")
        await redis.config_set("maxmemory-policy", "noeviction")
        await stage.ready_after(watch, time.time(), READY_WITHIN_S)
        await stage.wait_loads()
    finally:
        await watch.stop()
    stage.expect("0 duplicates", lambda f: (f.extra_starts == 0, f"{f.extra_starts} extra"))
    no_runtime_exited(stage)
