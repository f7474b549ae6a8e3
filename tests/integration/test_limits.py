"""Fleet-wide rate limit (GCRA in the claim script) and the circuit breaker, on a real
redis-server."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.integration.conftest import MakeHarness

pytestmark = pytest.mark.integration

LIMITED = """
    import time
    from runtime import Breaker, function

    STARTS: list[float] = []
    CALLS: list[float] = []

    @function(concurrency=50, rate_limit="20/s", rate_burst=4)
    async def paced(x: int) -> None:
        STARTS.append(time.monotonic())

    @function(
        concurrency=1,
        max_attempts=1,
        breaker=Breaker(failure_ratio=0.5, min_samples=4, window_s=30, cooldown_s=1.5),
    )
    async def broken(x: int) -> None:
        CALLS.append(time.monotonic())
        raise ConnectionError("the dependency is down")
"""


def max_in_window(times: list[float], window_s: float) -> int:
    times = sorted(times)
    best, left = 0, 0
    for right, t in enumerate(times):
        while t - times[left] >= window_s:
            left += 1
        best = max(best, right - left + 1)
    return best


async def test_claims_by_the_rate_limit_respect_it_in_redis(make_harness: MakeHarness) -> None:
    h = await make_harness(LIMITED, start=False)
    for i in range(10):
        await h.client.enqueue("paced", i)
    interval = h.registry.get("paced").options.rate_interval_ms
    assert interval == 50.0
    first = await h.broker.claim(
        "paced", 10, lease_ms=5000, max_in_flight=0, rate_interval_ms=interval, rate_burst=4
    )
    assert len(first.jobs) == 4  # the burst
    assert first.rate_ready_ms - first.now_ms == pytest.approx(50, abs=2)
    second = await h.broker.claim(
        "paced", 10, lease_ms=5000, max_in_flight=0, rate_interval_ms=interval, rate_burst=4
    )
    assert len(second.jobs) <= 1  # at most what the elapsed milliseconds earned
    await asyncio.sleep(0.2)
    third = await h.broker.claim(
        "paced", 10, lease_ms=5000, max_in_flight=0, rate_interval_ms=interval, rate_burst=4
    )
    assert 3 <= len(third.jobs) <= 4  # 200 ms earned 4 more starts


async def test_a_rate_limited_function_runs_at_its_rate(make_harness: MakeHarness) -> None:
    h = await make_harness(LIMITED)
    started = time.monotonic()
    ids = [await h.client.enqueue("paced", i) for i in range(44)]
    for job_id in ids:
        await h.client.wait(job_id, 10)
    elapsed = time.monotonic() - started
    starts = h.registry.get("paced").handler.__globals__["STARTS"]
    assert len(starts) == 44
    # 4 at once, then one per 50 ms: 40 more take 2 s.
    assert 1.9 <= elapsed < 3.5
    assert max_in_window(starts, 1.0) <= 20 + 4
    worker = h.dispatcher.workers["paced"] if h.dispatcher else None
    assert worker is not None and worker.counters.rate_limited > 0


async def test_breaker_opens_stops_claiming_then_probes(make_harness: MakeHarness) -> None:
    h = await make_harness(LIMITED)
    ids = [await h.client.enqueue("broken", i) for i in range(30)]
    calls = h.registry.get("broken").handler.__globals__["CALLS"]
    deadline = time.monotonic() + 5
    while len(calls) < 4 and time.monotonic() < deadline:  # noqa: ASYNC110 (polls a list)
        await asyncio.sleep(0.01)
    assert h.dispatcher is not None
    worker = h.dispatcher.workers["broken"]
    assert worker.breaker_state == "open"
    # Waited for as a condition, then timed by the handler's own clock: nothing is claimed
    # within the cooldown; then one probe, which fails: open again (for another 1.5 s).
    deadline = time.monotonic() + 10
    while len(calls) < 5 and time.monotonic() < deadline:  # noqa: ASYNC110 (polls a list)
        await asyncio.sleep(0.01)
    assert len(calls) == 5 and calls[4] - calls[3] >= 1.5
    while worker.breaker_state != "open" and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    assert worker.breaker_state == "open" and len(calls) == 5
    stats = await h.broker.stats("broken")
    assert stats["ready_default"] == 25  # the rest wait in Redis with their attempts intact
    breaker = await h.redis.hgetall("{rt:broken}:breaker")
    assert len(breaker) == 1 and b'"state":"open"' in next(iter(breaker.values()))
    dead = [await h.client.job(job_id) for job_id in ids[:5]]
    assert all(r is not None and r.state == "dead" for r in dead)
