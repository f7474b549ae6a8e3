"""Job records corrupted in Redis (issue 13): each costs its own job only.

Every case asserts: the worker stays alive, every valid job completes, the corrupt one is
dead-lettered ``corrupt_record`` (its raw fields kept for ``peek``), and every job is in
exactly one place (``checks.job_places``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest

from runtime.jobs import envelope
from runtime.jobs.settle import Complete, RetryLater
from runtime.queue.admin import Admin
from runtime.queue.waiter import ResultWaiter
from tests.integration.checks import job_places
from tests.integration.conftest import Harness, MakeHarness

pytestmark = pytest.mark.integration

HELLO = """
    from runtime import function

    @function(concurrency=4, timeout_s=5, max_attempts=3)
    async def hello(name: str) -> str:
        return f"Hello, {name}"

    @function(concurrency=16, rate_limit="50/s", rate_burst=5)
    async def paced(n: int) -> int:
        return n
"""
P = "{rt:hello}:"
INT64_MAX = str(2**63 - 1)


async def until(check: Callable[[], Awaitable[Any]], timeout_s: float = 10.0) -> Any:
    """Wait for ``check()`` to return something truthy (a condition, not a clock)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


async def dead_reason(h: Harness, job_id: str | bytes) -> tuple[str, str] | None:
    key = P.encode() + b"job:" + (job_id.encode() if isinstance(job_id, str) else job_id)
    state, reason = await h.redis.hmget(key, "state", "reason")
    if state != b"dead":
        return None
    return state.decode(), (reason or b"").decode()


async def dlq_records(h: Harness) -> list[dict[bytes, bytes]]:
    """The dead record behind every DLQ entry."""
    return [
        await h.redis.hgetall(P.encode() + b"job:" + i)
        for i in await h.redis.lrange(P + "dlq", 0, -1)
    ]


async def assert_settled(h: Harness, good: list[str]) -> None:
    for job_id in good:
        assert await h.client.result(job_id, 10) == f"Hello, {job_id[-1]}"
    assert h.dispatcher is not None and h.dispatcher.is_running
    assert await job_places(h.redis, "rt", "hello") == []


async def three_jobs(h: Harness) -> tuple[list[str], str]:
    a = await h.client.enqueue("hello", "a", job_id="a")
    bad = await h.client.enqueue("hello", "x", job_id="bad")
    c = await h.client.enqueue("hello", "c", job_id="c")
    return [a, c], bad


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("att", "many"),
        ("rec", "1.5"),
        ("enq", ""),
        ("tok", "x"),
        ("tok", INT64_MAX),  # the claim's HINCRBY would overflow
        ("att", INT64_MAX),
        ("state", "zombie"),
    ],
)
async def test_a_record_with_a_bad_field_is_dead_lettered_alone(
    make_harness: MakeHarness, field: str, value: str
) -> None:
    h = await make_harness(HELLO, start=False)
    good, bad = await three_jobs(h)
    await h.redis.hset(P + f"job:{bad}", field, value)
    h.start()
    await assert_settled(h, good)
    assert await until(lambda: dead_reason(h, bad)) == ("dead", "corrupt_record")
    record = await h.redis.hgetall(P + f"job:{bad}")
    if field == "state":  # replaced by 'dead'; the error names the state it had
        assert value.encode() in record[b"err"]
    else:
        assert record[field.encode()] == value.encode()  # the raw field is kept for peek
    assert int(await h.redis.hget(P + "stats", "dead")) == 1


async def test_a_non_utf8_id_is_dead_lettered_under_a_safe_id(make_harness: MakeHarness) -> None:
    h = await make_harness(HELLO, start=False)
    good, _ = await three_jobs(h)
    raw = b"hello.\xff\xfe"
    env = envelope.encode(envelope.Envelope(envelope.ENVELOPE_VERSION, "x", "hello", b"\xa1x"))
    await h.redis.hset(P.encode() + b"job:" + raw, mapping={"env": env, "state": "queued",
                       "att": 0, "rec": 0, "tok": 0, "enq": 1, "prio": "default"})  # fmt: skip
    await h.redis.rpush(P + "ready:default", raw)
    h.start()
    await assert_settled(h, good)

    async def buried() -> list[dict[bytes, bytes]]:
        return [r for r in await dlq_records(h) if r.get(b"raw_id") == raw]

    (record,) = await until(buried)
    assert (record[b"state"], record[b"reason"]) == (b"dead", b"corrupt_record")


async def test_a_job_key_of_the_wrong_type_is_dead_lettered(make_harness: MakeHarness) -> None:
    h = await make_harness(HELLO, start=False)
    good, bad = await three_jobs(h)
    await h.redis.delete(P + f"job:{bad}")
    await h.redis.set(P + f"job:{bad}", "not a hash")
    h.start()
    await assert_settled(h, good)

    async def buried() -> list[dict[bytes, bytes]]:
        return [r for r in await dlq_records(h) if r.get(b"raw_id") == bad.encode()]

    (record,) = await until(buried)
    assert record[b"reason"] == b"corrupt_record" and b"string" in record[b"err"]
    assert await h.redis.get(P + f"job:{bad}") == b"not a hash"  # left as found


async def test_a_claim_past_bad_ids_leases_every_other_one(make_harness: MakeHarness) -> None:
    h = await make_harness(HELLO, start=False)
    ids = [await h.client.enqueue("hello", n, job_id=n) for n in "abcde"]
    await h.redis.delete(P + "job:hello.b")
    await h.redis.set(P + "job:hello.b", "wrong type")
    await h.redis.hset(P + "job:hello.d", "tok", INT64_MAX)
    await h.redis.lpush(P + "ready:default", "hello.ghost")  # an orphan, first in line
    claim = await h.broker.claim("hello", 3, lease_ms=5000, max_in_flight=0)
    assert [j.id for j in claim.jobs] == ["hello.a", "hello.c", "hello.e"]
    assert await h.redis.llen(P + "ready:default") == 0
    assert await job_places(h.redis, "rt", "hello") == []
    assert (await dead_reason(h, "hello.d")) == ("dead", "corrupt_record")
    assert int(await h.redis.hget(P + "stats", "dead")) == 3  # ghost, b (derived), d
    assert ids[0] == "hello.a"


async def test_orphan_ids_never_make_a_claim_come_back_short(make_harness: MakeHarness) -> None:
    """Evicted job hashes (allkeys-lru) leave ids in the lanes: the claim looks past them."""
    h = await make_harness(HELLO, start=False)
    await h.redis.rpush(P + "ready:default", *[f"hello.gone{i}" for i in range(300)])
    good = [await h.client.enqueue("hello", n, job_id=n) for n in "xyz"]
    claim = await h.broker.claim("hello", 3, lease_ms=5000, max_in_flight=0)
    assert [j.id for j in claim.jobs] == good
    assert await h.redis.llen(P + "dlq") == 300


async def test_a_settle_batch_with_an_overflowing_counter_applies_the_rest(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(HELLO, start=False)
    for n in "abc":
        await h.client.enqueue("hello", n, job_id=n)
    jobs = (await h.broker.claim("hello", 3, lease_ms=5000, max_in_flight=0)).jobs
    await h.redis.hset(P + "job:hello.b", "att", INT64_MAX)  # HINCRBY att would overflow
    await h.redis.hset(P + "stats", "retried", INT64_MAX)  # and so would the stats counter
    codes = await h.broker.settle(
        "hello",
        [
            RetryLater(jobs[0].id, jobs[0].token, 10, "boom", "handler_error"),
            RetryLater(jobs[1].id, jobs[1].token, 10, "boom", "handler_error"),
            Complete(jobs[2].id, jobs[2].token, b'"ok"'),
        ],
    )
    assert codes[0] == 1 and codes[2] == 1 and codes[1] != 0
    assert await h.redis.hget(P + "job:hello.a", "state") == b"delayed"
    assert await h.redis.hget(P + "job:hello.c", "state") == b"completed"
    assert await dead_reason(h, "hello.b") == ("dead", "corrupt_record")
    assert await job_places(h.redis, "rt", "hello") == []


async def test_heartbeat_and_reclaim_survive_a_record_broken_while_running(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(HELLO, start=False)
    for n in "abc":
        await h.client.enqueue("hello", n, job_id=n)
    jobs = (await h.broker.claim("hello", 3, lease_ms=200, max_in_flight=0)).jobs
    await h.redis.delete(P + "job:hello.a")
    await h.redis.sadd(P + "job:hello.a", "a set now")
    await h.redis.hset(P + "job:hello.b", "rec", "NaN")
    held = [(j.id, j.token) for j in jobs]
    lost, _ = await h.broker.heartbeat("hello", held, lease_ms=200)
    assert lost == ["hello.a"]
    totals = [0, 0]

    async def reclaimed() -> bool:  # the leases expire by Redis time, a's first
        requeued, dead = await h.broker.reclaim("hello", max_recoveries=3)
        totals[0] += requeued
        totals[1] += dead
        return sum(totals) >= 3

    assert await until(reclaimed)
    assert totals == [1, 2]
    assert await h.redis.lrange(P + "ready:default", 0, -1) == [b"hello.c"]
    assert await dead_reason(h, "hello.b") == ("dead", "corrupt_record")
    assert await job_places(h.redis, "rt", "hello") == []


async def test_reads_show_a_corrupt_record_and_never_raise(make_harness: MakeHarness) -> None:
    h = await make_harness(HELLO, start=False)
    deep = b"\x91" * 100_000 + b"\xc0"  # 100k nested msgpack arrays
    env = envelope.encode(envelope.Envelope(envelope.ENVELOPE_VERSION, "hello.deep", "hello", deep))
    await h.redis.hset(P + "job:hello.deep", mapping={"env": env, "state": "dead",
                       "reason": "decode_error", "att": "x", "rec": b"\xff", "enq": "1e3",
                       "end": INT64_MAX + "0", "res": b"[" * 100_000})  # fmt: skip
    await h.redis.rpush(P + "dlq", "hello.deep", b"hello.\xff")
    await h.redis.set(P + "job:hello.\xff", "wrong type")
    await h.redis.hset(P + "stats", mapping={"dead": "lots", "completed": b"\xfe", "x": INT64_MAX})
    await h.redis.hset(P + "minute:1", "completed", "x")
    await h.redis.hset(P + "breaker", "host:1", b"\x00not json")
    await h.redis.rpush(P + "ready:high", b"hello.\xfe")
    record = await h.broker.job("hello.deep")
    assert record is not None and record.state == "dead" and record.corrupt
    assert record.attempts == 0 and record.finished_ms is None
    admin = Admin(h.redis, "rt")
    stats = await admin.stats(["hello"])
    assert stats.functions[0].totals["x"] == 2**63 - 1
    assert "dead" not in stats.functions[0].totals  # an unreadable counter is left out
    peek = await admin.peek("hello", is_dlq=True)
    views = {v.id: v for v in peek.jobs}
    assert "hello.deep" in views and views["hello.deep"].payload_error
    ready = await admin.peek("hello")
    assert [v.id for v in ready.jobs] == ["hello.\ufffd"]
    assert h.dispatcher is None


async def test_idle_rate_limited_function_stops_claiming(make_harness: MakeHarness) -> None:
    """After a burst the queue is empty: a rate-limited worker waits for a wake or its idle
    poll, like an unlimited one, instead of claiming again every few milliseconds."""
    h = await make_harness(HELLO, start=False)
    calls = {"claim": 0, "reclaim": 0}
    claim, reclaim = h.broker.claim, h.broker.reclaim

    async def counted_claim(function: str, *args: Any, **kwargs: Any) -> Any:
        calls["claim"] += function == "paced"
        return await claim(function, *args, **kwargs)

    async def counted_reclaim(function: str, *args: Any, **kwargs: Any) -> Any:
        calls["reclaim"] += function == "paced"
        return await reclaim(function, *args, **kwargs)

    async def passes_done() -> bool:
        return calls["reclaim"] >= passes + 4

    h.broker.claim = counted_claim  # type: ignore[method-assign]
    h.broker.reclaim = counted_reclaim  # type: ignore[method-assign]
    dispatcher = h.start()
    ids = [await h.client.enqueue("paced", i) for i in range(40)]
    for job_id in ids:
        await h.client.wait(job_id, 10)
    worker = dispatcher.workers["paced"]
    assert worker.counters.rate_limited > 0  # the burst was paced
    # A window of four reclaim passes (0.3 s apart) once the queue is empty: the claims an
    # idle worker makes in it are its idle polls (0.5 s) and nothing more.
    hits, claims, passes = worker.counters.rate_limited, calls["claim"], calls["reclaim"]
    assert await until(passes_done)
    assert worker.counters.rate_limited == hits
    assert calls["claim"] - claims <= 6, calls
    # A wake still reaches it: a new job starts well before the next idle poll would.
    await h.client.result(await h.client.enqueue("paced", 7), 5)
    assert dispatcher.is_running


def test_the_reason_is_in_the_vocabulary() -> None:
    from typing import get_args

    from runtime.jobs.outcome import Reason

    assert "corrupt_record" in get_args(Reason)
    assert msgspec.json.encode("corrupt_record")


@pytest.mark.parametrize(("key", "delay_s"), [("ready:default", 0.0), ("delayed", 5.0)])
async def test_an_enqueue_into_a_key_of_the_wrong_type_writes_nothing(
    make_harness: MakeHarness, key: str, delay_s: float
) -> None:
    """A lane (or delayed set) of another type fails the enqueue with an error naming it,
    before the job's record exists: no record in no place."""
    from runtime.errors import BrokerCommandError

    h = await make_harness(HELLO, start=False)
    await h.redis.set(P + key, "not a list")
    with pytest.raises(BrokerCommandError, match="WRONGTYPE"):
        await h.client.enqueue("hello", "a", job_id="hello.a", delay_s=delay_s)
    assert await h.redis.exists(P + "job:hello.a") == 0


async def test_a_park_key_of_the_wrong_type_leaves_the_job_to_its_lane(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(HELLO, start=False)
    await h.redis.set(P + "park", "not a hash")
    await h.redis.zadd(P + "parked", {"some-channel": time.time() * 1000 + 60_000})
    job_id = await h.client.enqueue("hello", "a", job_id="hello.a")
    assert await h.redis.lrange(P + "ready:default", 0, -1) == [job_id.encode()]
    await h.redis.delete(P + "park", P + "parked")
    h.start()
    assert await h.client.result(job_id, 10) == "Hello, a"


async def test_a_waiter_hears_of_a_corrupt_record_the_claim_dead_letters(
    make_harness: MakeHarness,
) -> None:
    """An HTTP caller waits (shared subscription, no polling) on a job whose record is then
    corrupted; the claim dead-letters it: the waiter is told at once, not at its timeout."""
    h = await make_harness(HELLO, start=False)
    job_id, _ = await h.client.producer.enqueue("hello", "x", job_id="waited", notify=True)
    await h.redis.hset(P + f"job:{job_id}", "att", "many")
    waiter = ResultWaiter(h.broker)
    try:
        waiting = asyncio.ensure_future(waiter.wait(job_id, 30))
        await asyncio.wait_for(waiter.is_subscribed.wait(), 10)
        started = time.monotonic()
        h.start()
        record = await asyncio.wait_for(waiting, 30)
        assert record is not None and (record.state, record.reason) == ("dead", "corrupt_record")
        assert time.monotonic() - started < 5  # told, not timed out
        assert await h.redis.lrange(P + f"done:{job_id}", 0, -1) == [b"1"]  # for BLMOVE waiters
    finally:
        await waiter.close()
