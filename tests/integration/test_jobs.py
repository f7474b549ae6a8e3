"""The job lifecycle against a real redis-server: handlers in a folder → registry → broker →
dispatcher, driven by the Python client (in one process; see test_processes.py for the
tests that kill real runtime processes)."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from runtime.errors import JobFailed, PayloadError, PayloadTooLarge, UnknownFunction
from runtime.jobs import envelope
from runtime.jobs.settle import Complete
from tests.integration.conftest import MakeHarness

pytestmark = pytest.mark.integration

HELLO = """
    import msgspec
    from runtime import Context, function

    class Greet(msgspec.Struct):
        name: str

    @function(concurrency=8, max_in_flight=32, timeout_s=10, max_attempts=3)
    async def hello(event: Greet, ctx: Context) -> dict[str, str]:
        return {"greeting": f"Hello, {event.name}"}

    @function(executor="thread")
    def shout(text: str) -> str:
        return text.upper()
"""


async def test_enqueue_then_complete(make_harness: MakeHarness) -> None:
    h = await make_harness(HELLO)
    job_id = await h.client.enqueue("hello", {"name": "Ada"})
    assert job_id.startswith("hello.")
    assert await h.client.result(job_id, 5) == {"greeting": "Hello, Ada"}
    record = await h.client.job(job_id)
    assert record is not None
    assert (record.state, record.attempts) == ("completed", 0)
    assert record.started_ms is not None and record.finished_ms is not None
    assert await h.client.result(await h.client.enqueue("shout", "hi"), 5) == "HI"


async def test_bad_payload_is_refused_before_enqueue(make_harness: MakeHarness) -> None:
    h = await make_harness(HELLO, start=False)
    with pytest.raises(PayloadError, match=r"\$\.name: expected str, got int"):
        await h.client.enqueue("hello", {"name": 3})
    with pytest.raises(UnknownFunction, match="did you mean 'hello'"):
        await h.client.enqueue("helo", {"name": "x"})
    assert await h.redis.dbsize() == 0  # nothing reached Redis


RETRY = """
    import msgspec
    from runtime import Context, Retry, function

    @function(max_attempts=4, backoff=(0.01, 0.05))
    async def flaky(failures: int, ctx: Context) -> int:
        if ctx.attempt <= failures:
            raise RuntimeError(f"boom {ctx.attempt}")
        return ctx.attempt

    @function(max_attempts=3, backoff=(0.01, 0.05))
    async def always(x: int) -> None:
        raise ValueError("always fails")

    @function(max_attempts=5)
    async def later(x: int, ctx: Context) -> int:
        if ctx.attempt == 1:
            raise Retry(delay_s=0.3, reason="not yet")
        return ctx.attempt
"""


async def test_retry_then_succeed(make_harness: MakeHarness) -> None:
    h = await make_harness(RETRY)
    job_id = await h.client.enqueue("flaky", 2)
    assert await h.client.result(job_id, 5) == 3
    record = await h.client.job(job_id)
    assert record is not None
    assert record.attempts == 2  # two failed attempts counted, the third completed


async def test_retries_exhausted_go_to_dlq_with_reason(make_harness: MakeHarness) -> None:
    h = await make_harness(RETRY)
    job_id = await h.client.enqueue("always", 1)
    with pytest.raises(JobFailed) as failed:
        await h.client.result(job_id, 5)
    assert failed.value.reason == "handler_error"
    assert "ValueError: always fails" in failed.value.error
    record = await h.client.job(job_id)
    assert record is not None
    assert (record.state, record.attempts) == ("dead", 3)
    assert await h.redis.lrange("{rt:always}:dlq", 0, -1) == [job_id.encode()]


async def test_retry_signal_waits_its_delay(make_harness: MakeHarness) -> None:
    h = await make_harness(RETRY)
    started = time.monotonic()
    job_id = await h.client.enqueue("later", 1)
    assert await h.client.result(job_id, 5) == 2
    assert time.monotonic() - started >= 0.3


TIMEOUT = """
    import asyncio, time
    from runtime import function

    @function(timeout_s=0.2, max_attempts=2, backoff=(0.01, 0.01))
    async def sleepy(seconds: float) -> None:
        await asyncio.sleep(seconds)

    @function(timeout_s=0.2, max_attempts=1, executor="thread", concurrency=1)
    def blocking(seconds: float) -> str:
        time.sleep(seconds)
        return "done"
"""


async def test_timeout_goes_to_dlq_as_timeout(make_harness: MakeHarness) -> None:
    h = await make_harness(TIMEOUT)
    job_id = await h.client.enqueue("sleepy", 5.0)
    with pytest.raises(JobFailed) as failed:
        await h.client.result(job_id, 5)
    assert failed.value.reason == "timeout"
    record = await h.client.job(job_id)
    assert record is not None and record.attempts == 2


async def test_thread_timeout_holds_the_slot_until_the_thread_ends(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(TIMEOUT)
    first = await h.client.enqueue("blocking", 0.8)
    second = await h.client.enqueue("blocking", 0.0)
    with pytest.raises(JobFailed, match="timeout"):
        await h.client.result(first, 5)
    started = time.monotonic()
    assert await h.client.result(second, 5) == "done"
    # concurrency=1: the second job could start only when the abandoned thread ended.
    first_record = await h.client.job(first)
    second_record = await h.client.job(second)
    assert first_record is not None and second_record is not None
    assert second_record.started_ms is not None and first_record.started_ms is not None
    assert second_record.started_ms - first_record.started_ms >= 750
    assert time.monotonic() - started < 5


REJECT = """
    from runtime import Reject, function

    @function(max_attempts=5)
    async def picky(x: int) -> int:
        if x < 0:
            raise Reject("negative input")
        return x
"""


async def test_reject_goes_straight_to_dlq(make_harness: MakeHarness) -> None:
    h = await make_harness(REJECT)
    job_id = await h.client.enqueue("picky", -1)
    with pytest.raises(JobFailed) as failed:
        await h.client.result(job_id, 5)
    assert (failed.value.reason, failed.value.error) == ("rejected", "negative input")
    record = await h.client.job(job_id)
    assert record is not None and record.attempts == 1


CONCURRENCY = """
    import asyncio, time
    from runtime import Context, function

    INTERVALS: list[tuple[float, float]] = []

    @function(concurrency=3)
    async def limited(x: int) -> None:
        start = time.monotonic()
        await asyncio.sleep(0.05)
        INTERVALS.append((start, time.monotonic()))
"""


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = now = 0
    for _, delta in events:
        now += delta
        best = max(best, now)
    return best


async def test_concurrency_is_never_exceeded(make_harness: MakeHarness) -> None:
    h = await make_harness(CONCURRENCY)
    ids = [await h.client.enqueue("limited", i) for i in range(30)]
    for job_id in ids:
        await h.client.result(job_id, 10)
    intervals = h.registry.get("limited").handler.__globals__["INTERVALS"]
    assert len(intervals) == 30
    assert max_overlap(intervals) == 3  # reached, never exceeded


ORDER = """
    from runtime import function

    SEEN: list[str] = []

    @function(concurrency=1)
    async def ordered(tag: str) -> None:
        SEEN.append(tag)
"""


async def test_strict_priority_order(make_harness: MakeHarness) -> None:
    h = await make_harness(ORDER, start=False)
    lanes = ["low", "default", "high"]
    ids = []
    for i in range(9):
        lane = lanes[i % 3]
        ids.append(await h.client.enqueue("ordered", f"{lane}{i}", priority=lane))  # type: ignore[arg-type]
    h.start()
    for job_id in ids:
        await h.client.result(job_id, 5)
    seen = h.registry.get("ordered").handler.__globals__["SEEN"]
    assert seen == ["high2", "high5", "high8", "default1", "default4", "default7", "low0",
                    "low3", "low6"]  # fmt: skip


async def test_delayed_job_runs_after_its_delay(make_harness: MakeHarness) -> None:
    h = await make_harness(HELLO)
    started = time.monotonic()
    job_id = await h.client.enqueue("hello", {"name": "Later"}, delay_s=0.4)
    record = await h.client.job(job_id)
    assert record is not None and record.state == "delayed"
    assert await h.client.result(job_id, 5) == {"greeting": "Hello, Later"}
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 2.0


async def test_idempotency_key_and_job_id_make_one_job(make_harness: MakeHarness) -> None:
    h = await make_harness(HELLO, start=False)
    a = await h.client.enqueue("hello", {"name": "A"}, idempotency_key="order-1")
    b = await h.client.enqueue("hello", {"name": "B"}, idempotency_key="order-1")
    c = await h.client.enqueue("hello", {"name": "C"}, job_id="fixed")
    d = await h.client.enqueue("hello", {"name": "D"}, job_id="fixed")
    assert a == b and c == d == "hello.fixed"
    assert await h.redis.llen("{rt:hello}:ready:default") == 2
    h.start()
    assert await h.client.result(b, 5) == {"greeting": "Hello, A"}
    assert await h.client.result(d, 5) == {"greeting": "Hello, C"}


async def test_payload_over_the_limit_is_refused(make_harness: MakeHarness) -> None:
    h = await make_harness(HELLO, start=False, functions={"hello": {"max_payload_bytes": 64}})
    with pytest.raises(PayloadTooLarge, match="over max_payload_bytes=64"):
        await h.client.enqueue("hello", {"name": "x" * 100})


async def test_garbage_written_straight_into_redis_is_dead_lettered(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(HELLO, start=False)
    # An envelope that does not decode, one naming an unknown function, one whose payload
    # does not match the type, and a bare id with no job record.
    cases = {
        "hello.garbage": b"\x00not msgpack",
        "hello.stranger": envelope.encode(
            envelope.Envelope(envelope.ENVELOPE_VERSION, "hello.stranger", "nope", b"\x80")
        ),
        "hello.badtype": envelope.encode(
            envelope.Envelope(
                envelope.ENVELOPE_VERSION, "hello.badtype", "hello", msgspec.msgpack.encode(3)
            )
        ),
    }
    for job_id, env in cases.items():
        await h.broker.enqueue("hello", job_id, env)
    await h.setup.rpush("{rt:hello}:ready:default", "hello.ghost")
    good = await h.client.enqueue("hello", {"name": "ok"})
    h.start()
    assert await h.client.result(good, 5) == {"greeting": "Hello, ok"}
    expected = {
        "hello.garbage": "decode_error",
        "hello.stranger": "unknown_function",
        "hello.badtype": "decode_error",
    }
    for job_id, reason in expected.items():
        record = await h.broker.wait(job_id, 5)
        assert record is not None
        assert (record.state, record.reason) == ("dead", reason), record.error
    ghost = await h.client.job("hello.ghost")
    assert ghost is not None and (ghost.state, ghost.reason) == ("dead", "decode_error")
    dlq = {x.decode() for x in await h.redis.lrange("{rt:hello}:dlq", 0, -1)}
    assert dlq == {*expected, "hello.ghost"}
    assert h.dispatcher is not None and h.dispatcher.is_running


async def test_stale_acknowledgement_is_fenced(make_harness: MakeHarness) -> None:
    """A worker whose lease was reclaimed cannot complete the job the new holder runs."""
    h = await make_harness(HELLO, start=False)
    job_id = await h.client.enqueue("hello", {"name": "x"})
    first = await h.broker.claim("hello", 1, lease_ms=50, max_in_flight=0)
    assert [j.id for j in first.jobs] == [job_id]
    await asyncio.sleep(0.1)
    assert await h.broker.reclaim("hello", max_recoveries=3) == (1, 0)
    second = await h.broker.claim("hello", 1, lease_ms=5000, max_in_flight=0)
    assert [j.id for j in second.jobs] == [job_id]
    old, new = first.jobs[0].token, second.jobs[0].token
    assert old != new
    assert await h.broker.settle("hello", [Complete(job_id, old, b'"old"')]) == [0]
    assert await h.broker.extend("hello", [(job_id, old)], lease_ms=5000) == [job_id]
    assert await h.broker.settle("hello", [Complete(job_id, new, b'"new"')]) == [1]
    # The same settle again (a retried script whose reply was lost) is recognised.
    assert await h.broker.settle("hello", [Complete(job_id, new, b'"new"')]) == [2]
    record = await h.client.job(job_id)
    assert record is not None and (record.state, record.result) == ("completed", b'"new"')
    stats = await h.broker.stats("hello")
    assert stats["stale_acks"] == 1 and stats["completed"] == 1 and stats["recovered"] == 1


async def test_expired_lease_is_reclaimed_and_run_again(make_harness: MakeHarness) -> None:
    """A job claimed by a worker that vanished runs again within lease + reclaim interval."""
    h = await make_harness(HELLO, start=False)
    job_id = await h.client.enqueue("hello", {"name": "again"})
    claim = await h.broker.claim("hello", 1, lease_ms=1000, max_in_flight=0)
    assert len(claim.jobs) == 1  # ... and this "worker" dies without a word
    started = time.monotonic()
    h.start()
    assert await h.client.result(job_id, 5) == {"greeting": "Hello, again"}
    # lease 1.0 s + reclaim interval 0.3 s (±25 % jitter), with margin for a busy machine
    assert time.monotonic() - started < 1.0 + 0.4 + 1.0
    record = await h.client.job(job_id)
    assert record is not None and record.recoveries == 1


async def test_retried_claim_returns_the_same_jobs(make_harness: MakeHarness) -> None:
    """A claim whose reply was lost and is retried (same claim id) leases nothing new."""
    h = await make_harness(HELLO, start=False)
    ids = [await h.client.enqueue("hello", {"name": str(i)}) for i in range(4)]
    k = h.broker.keys("hello")
    keys = [*k.lanes, k.delayed, k.leased, k.claim("replay"), k.dlq, k.stats, k.rate]
    args = [k.prefix, 2, 5000, 0, 60, 100, 0, 1]
    first = await h.broker._claim(keys=keys, args=args)
    again = await h.broker._claim(keys=keys, args=args)
    assert [j[0].decode() for j in first[0]] == ids[:2]
    assert [(j[0], j[1]) for j in again[0]] == [(j[0], j[1]) for j in first[0]]
    assert await h.redis.llen("{rt:hello}:ready:default") == 2


async def test_fleet_wide_max_in_flight_caps_the_claim(make_harness: MakeHarness) -> None:
    h = await make_harness(HELLO, start=False)
    for i in range(10):
        await h.client.enqueue("hello", {"name": str(i)})
    a = await h.broker.claim("hello", 8, lease_ms=5000, max_in_flight=5)
    b = await h.broker.claim("hello", 8, lease_ms=5000, max_in_flight=5)
    assert (len(a.jobs), a.is_fleet_limited) == (5, True)
    assert (len(b.jobs), b.is_fleet_limited) == (0, True)


async def test_idle_worker_starts_a_new_job_within_milliseconds(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(HELLO, idle_poll_s=5.0)
    await asyncio.sleep(0.3)  # let the worker go idle (blocked on its wake event)
    latencies = []
    for i in range(20):
        started = time.monotonic()
        await h.client.result(await h.client.enqueue("hello", {"name": str(i)}), 5)
        latencies.append(time.monotonic() - started)
        await asyncio.sleep(0.02)
    latencies.sort()
    # With a 5 s poll interval only the wake-up channel can explain a fast start.
    assert latencies[len(latencies) // 2] < 0.1, latencies


async def test_graceful_drain_releases_late_jobs(make_harness: MakeHarness) -> None:
    h = await make_harness(TIMEOUT.replace("timeout_s=0.2, max_attempts=2", "timeout_s=30"))
    job_id = await h.client.enqueue("sleepy", 10.0)
    for _ in range(100):
        record = await h.client.job(job_id)
        if record is not None and record.state == "running":
            break
        await asyncio.sleep(0.02)
    started = time.monotonic()
    await h.stop(grace_s=0.2)
    assert time.monotonic() - started < 2.0
    record = await h.client.job(job_id)
    assert record is not None
    assert (record.state, record.attempts, record.recoveries) == ("queued", 0, 0)
    assert await h.redis.lrange("{rt:sleepy}:ready:default", 0, -1) == [job_id.encode()]
    assert await h.redis.zcard("{rt:sleepy}:leased") == 0


async def test_reclaim_blames_only_the_suspect_that_was_executing(
    make_harness: MakeHarness,
) -> None:
    """Two suspects (two crashes behind them) claimed together; only the one that was
    running alone when the process died is blamed; the one waiting its turn is spared."""
    h = await make_harness(HELLO, start=False)
    poison = await h.client.enqueue("hello", {"name": "poison"})
    bystander = await h.client.enqueue("hello", {"name": "bystander"})
    for job_id in (poison, bystander):
        await h.redis.hset(f"{{rt:hello}}:job:{job_id}", "rec", 2)
    claim = await h.broker.claim("hello", 2, lease_ms=50, max_in_flight=0)
    tokens = {job.id: job.token for job in claim.jobs}
    assert await h.broker.mark_executing("hello", poison, tokens[poison])
    assert not await h.broker.mark_executing("hello", poison, "999")  # not the holder's
    await asyncio.sleep(0.1)  # ... the process dies; the leases expire
    assert await h.broker.reclaim("hello", max_recoveries=2) == (1, 1)
    dead = await h.client.job(poison)
    spared = await h.client.job(bystander)
    assert dead is not None and (dead.state, dead.reason, dead.recoveries) == (
        "dead",
        "worker_crashed",
        3,
    )
    assert spared is not None and (spared.state, spared.recoveries) == ("queued", 2)
