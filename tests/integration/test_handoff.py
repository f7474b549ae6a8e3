"""Handoff against a real redis-server: an idle worker is parked by its claim, and enqueue
leases a new job straight to it and publishes it on that worker's channel (no claim round
trip). Each way the message can fail to lead to a run ends with the job completed once and
charged nothing: no subscriber (fall back to the lane), a lost message (adopted by the next
heartbeat), a late message (released), no free slot (released), the fleet cap (the lane)."""

from __future__ import annotations

import asyncio
import time

import pytest

from runtime.execution import dispatcher as dispatcher_module
from runtime.execution.dispatcher import Dispatcher
from runtime.execution.worker import FunctionWorker
from runtime.jobs.records import ClaimedJob, parse_handoff
from runtime.observe.metrics import Metrics
from tests.integration.conftest import Harness, MakeHarness

pytestmark = pytest.mark.integration

SOURCE = """
    import asyncio
    from runtime import function

    @function(concurrency=4, max_in_flight=0)
    async def echo(x: int) -> int:
        return x

    @function(concurrency=1)
    async def hold(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds
"""


async def parked(h: Harness, function: str, timeout_s: float = 5.0) -> list[bytes]:
    """The channels parked on ``function``, once there is one."""
    k = h.broker.keys(function)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        channels: list[bytes] = await h.redis.zrange(k.parked, 0, -1)
        if channels:
            return channels
        await asyncio.sleep(0.02)
    raise AssertionError(f"no worker of {function} parked within {timeout_s}s")


async def started_and_parked(
    make_harness: MakeHarness, function: str
) -> tuple[Harness, FunctionWorker]:
    """A running harness of SOURCE whose ``function`` worker is parked, and that worker."""
    h = await make_harness(SOURCE)
    assert h.dispatcher is not None
    await parked(h, function)
    return h, h.dispatcher.workers[function]


async def test_an_idle_worker_gets_a_new_job_by_handoff(make_harness: MakeHarness) -> None:
    h = await make_harness(SOURCE, start=False)
    metrics = Metrics(h.registry.names)
    h.dispatcher = Dispatcher(h.registry, h.broker, h.settings, metrics=metrics)
    h.dispatcher.start()
    worker = h.dispatcher.workers["echo"]
    assert [c.decode() for c in await parked(h, "echo")] == [worker.handoff_channel]
    claimed = worker.counters.claimed
    job_id = await h.client.enqueue("echo", 7)
    assert await h.client.result(job_id, 5) == 7
    assert worker.counters.handoffs == 1 and worker.counters.claimed == claimed + 1
    sample = metrics.registry.get_sample_value
    assert sample("jobs_handed_over_total", {"function": "echo", "outcome": "started"}) == 1
    assert sample("jobs_consumed_total", {"function": "echo"}) == 1
    record = await h.client.job(job_id)
    assert record is not None and (record.attempts, record.recoveries) == (0, 0)
    k = h.broker.keys("echo")
    assert await h.redis.hget(k.job(job_id), "hand") is None  # settled: not to adopt
    assert await h.redis.smembers(k.handed(worker.handoff_channel)) == set()


async def test_a_park_nobody_listens_to_falls_back_to_the_lane(make_harness: MakeHarness) -> None:
    h = await make_harness(SOURCE, start=False)
    k = h.broker.keys("echo")
    ghost = "{rt}:handoff:gone:1:0"
    claim = await h.broker.claim(
        "echo", 4, lease_ms=5000, max_in_flight=0, park_channel=ghost, park_ttl_ms=60_000
    )
    assert claim.jobs == [] and await h.redis.zrange(k.parked, 0, -1) == [ghost.encode()]
    job_id = await h.client.enqueue("echo", 1)
    assert await h.redis.lrange(k.ready["default"], 0, -1) == [job_id.encode()]
    assert await h.redis.hget(k.job(job_id), "state") == b"queued"
    assert await h.redis.zcard(k.parked) == 0 and await h.redis.hlen(k.park) == 0


async def test_an_expired_park_gets_nothing(make_harness: MakeHarness) -> None:
    h = await make_harness(SOURCE, start=False)
    k = h.broker.keys("echo")
    listener = h.redis.pubsub()
    await listener.subscribe("{rt}:handoff:slow:1")
    try:
        await h.broker.claim(
            "echo", 4, lease_ms=5000, max_in_flight=0, park_channel="{rt}:handoff:slow:1",
            park_ttl_ms=1,
        )  # fmt: skip
        await asyncio.sleep(0.05)
        job_id = await h.client.enqueue("echo", 1)
        assert await h.redis.hget(k.job(job_id), "state") == b"queued"
    finally:
        await listener.aclose()  # type: ignore[no-untyped-call]


async def test_a_malformed_park_is_dropped_not_an_enqueue_error(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(SOURCE, start=False)
    k = h.broker.keys("echo")
    await h.redis.zadd(k.parked, {"{rt}:handoff:odd:1": 2**50})
    await h.redis.hset(k.park, "{rt}:handoff:odd:1", "room lease cap")
    job_id = await h.client.enqueue("echo", 1)
    assert await h.redis.hget(k.job(job_id), "state") == b"queued"
    assert await h.redis.zcard(k.parked) == 0 and await h.redis.hlen(k.park) == 0


async def test_the_fleet_cap_holds_for_handoffs(make_harness: MakeHarness) -> None:
    h = await make_harness(SOURCE, start=False)
    k = h.broker.keys("echo")
    channel = "{rt}:handoff:capped:1"
    listener = h.redis.pubsub()
    await listener.subscribe(channel)
    try:
        first = await h.client.enqueue("echo", 1)
        claim = await h.broker.claim(
            "echo", 4, lease_ms=5000, max_in_flight=1, park_channel=channel, park_ttl_ms=60_000
        )
        assert [j.id for j in claim.jobs] == [first]
        assert await h.redis.zcard(k.parked) == 0  # at its cap: not parked
        await h.redis.zadd(k.parked, {channel: 2**50})  # parked by an older claim, say
        await h.redis.hset(k.park, channel, "3 5000 1")
        second = await h.client.enqueue("echo", 2)
        assert await h.redis.hget(k.job(second), "state") == b"queued"  # 1 in flight: cap
    finally:
        await listener.aclose()  # type: ignore[no-untyped-call]


async def test_a_lost_handoff_message_is_adopted_by_the_next_heartbeat(
    make_harness: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h, worker = await started_and_parked(make_harness, "echo")
    dropped: list[bytes] = []
    real = dispatcher_module.Dispatcher._handoff

    def lose_first(self: dispatcher_module.Dispatcher, channel: bytes, data: bytes) -> None:
        if data and not dropped:
            dropped.append(data)  # the message never reached the worker
            return
        real(self, channel, data)

    monkeypatch.setattr(dispatcher_module.Dispatcher, "_handoff", lose_first)
    job_id = await h.client.enqueue("echo", 5)
    assert await h.client.result(job_id, 5) == 5  # lease 1 s: adopted before it expired
    assert len(dropped) == 1 and worker.counters.handoffs == 1
    record = await h.client.job(job_id)
    assert record is not None and (record.attempts, record.recoveries) == (0, 0)
    # The message arriving after all must not run it again.
    parsed = parse_handoff(dropped[0])
    assert parsed is not None
    worker.accept(parsed[1], parsed[2])
    assert worker.counters.handoffs == 1 and worker.running == 0


async def test_a_late_or_unrunnable_handoff_is_released(
    make_harness: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h, worker = await started_and_parked(make_harness, "echo")
    assert h.dispatcher is not None
    lease_ms = round(h.settings.worker.lease_s * 1000)

    def late(data: bytes) -> tuple[str, ClaimedJob, int] | None:
        parsed = parse_handoff(data)
        assert parsed is not None
        return parsed[0], parsed[1], parsed[2] - lease_ms  # as if held up by a partition

    monkeypatch.setattr(dispatcher_module, "parse_handoff", late)
    job_id = await h.client.enqueue("echo", 3)
    assert await h.client.result(job_id, 5) == 3  # released to its lane, then claimed
    assert worker.counters.handoffs_refused == 1 and worker.counters.handoffs == 0
    record = await h.client.job(job_id)
    assert record is not None and (record.attempts, record.recoveries) == (0, 0)
    monkeypatch.undo()

    hold = h.dispatcher.workers["hold"]
    await parked(h, "hold")
    busy = await h.client.enqueue("hold", 0.5)
    await asyncio.sleep(0.1)
    # Its park still says room for one: hand it a job while its only slot is taken.
    k = h.broker.keys("hold")
    await h.redis.zadd(k.parked, {hold.handoff_channel: 2**50})
    await h.redis.hset(k.park, hold.handoff_channel, "1 1000 0")
    queued = await h.client.enqueue("hold", 0.0)
    assert await h.client.result(queued, 5) == 0.0
    assert await h.client.result(busy, 5) == 0.5
    assert hold.counters.handoffs_refused == 1


def test_handoff_messages_parse_strictly() -> None:
    parsed = parse_handoff(b"echo\necho.a1\n1732850000123\n\x93\x01\n\xff")
    assert parsed is not None
    function, job, now_ms = parsed
    assert (function, job.id, job.token, now_ms) == ("echo", "echo.a1", "1", 1732850000123)
    assert job.envelope == b"\x93\x01\n\xff"  # the envelope is last: any bytes, newlines too
    assert (job.attempts, job.recoveries, job.ready_ms) == (0, 0, 1732850000123)
    for bad in (b"", b"echo\nid", b"echo\nid\nsoon\nenv", b"\xff\nid\n1\nenv"):
        assert parse_handoff(bad) is None, bad


CAPPED = """
    import asyncio, time
    from runtime import function

    SPANS = []

    @function(concurrency=2, max_in_flight=0)
    async def pair(x: int) -> int:
        started = time.monotonic()
        await asyncio.sleep(0.3)
        SPANS.append((started, time.monotonic()))
        return x
"""


async def test_a_claim_sized_before_handoffs_filled_the_slots_stays_within_concurrency(
    make_harness: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: a claim leaves for two free slots; two handoffs take them while it is on
    the wire; it comes back with two more jobs. They go back to their lane, not over."""
    h = await make_harness(CAPPED)
    assert h.dispatcher is not None
    worker = h.dispatcher.workers["pair"]
    await parked(h, "pair")
    real_claim = type(h.broker).claim
    in_flight = asyncio.Event()
    handed = asyncio.Event()

    async def slow_claim(self: object, function: str, count: int, **kw: object) -> object:
        if function == "pair" and not in_flight.is_set():
            in_flight.set()
            await handed.wait()  # sized for `count` slots, answered after the handoffs
        return await real_claim(self, function, count, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(type(h.broker), "claim", slow_claim)
    worker.wake()  # the claim loop sends a claim for 2 free slots
    await asyncio.wait_for(in_flight.wait(), 2)
    first = [await h.client.enqueue("pair", i) for i in range(2)]  # handed over: slots full
    rest = [await h.client.enqueue("pair", i) for i in range(2, 4)]  # the lane
    await asyncio.sleep(0.05)
    assert worker.counters.handoffs == 2 and worker.running == 2
    handed.set()
    for job_id in first + rest:
        await h.client.wait(job_id, 5)
    spans = worker.spec.handler.__globals__["SPANS"]
    assert len(spans) == 4
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most <= 2, spans
    assert worker.counters.released == 2  # the claim's two, back to the lane


async def test_a_drain_unparks_its_workers_and_waits_for_the_fence(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(SOURCE)
    assert h.dispatcher is not None
    dispatcher = h.dispatcher
    await parked(h, "echo")
    await parked(h, "hold")
    fences = dispatcher._fences
    await h.stop()
    assert dispatcher._fences == fences + 2  # one fence per worker came back before it went on
    for function in ("echo", "hold"):
        k = h.broker.keys(function)
        assert await h.redis.zcard(k.parked) == 0 and await h.redis.hlen(k.park) == 0
    job_id = await h.client.enqueue("echo", 1)  # nobody is parked: it waits in its lane
    assert await h.redis.hget(h.broker.keys("echo").job(job_id), "state") == b"queued"
