"""Sharded functions (``@function(shards=N)``) against a real redis-server: jobs spread over
the shards' hash tags, ids tell their shard, every transition and every read works on each
shard, no shard starves, and a live change of N loses nothing."""

from __future__ import annotations

import asyncio
import time

import pytest

from runtime.errors import JobFailed
from runtime.jobs.settle import Complete
from runtime.queue.admin import Admin
from runtime.queue.backlog import BacklogReader
from runtime.queue.shards import made_suffix_shard, own_id_shard
from tests.integration.conftest import MakeHarness

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SHARDED = """
    from runtime import Context, Retry, function

    @function(shards=3, concurrency=8, timeout_s=10, max_attempts=2,
              backoff=(0.01, 0.01))
    async def echo(event: dict, ctx: Context) -> dict:
        if event.get("fail") == "always":
            raise ValueError("no")
        if event.get("fail") == "once" and ctx.attempt == 1:
            raise Retry(delay_s=0.01)
        return event
"""


def shard_of(job_id: str) -> int:
    shard = made_suffix_shard(job_id.split(".", 1)[1])
    assert shard is not None
    return shard


async def test_jobs_spread_over_the_shards_and_complete(make_harness: MakeHarness) -> None:
    h = await make_harness(SHARDED)
    # the idle worker parks on each shard after its first claim there (waited for: on a
    # loaded machine the jobs below could come first, be claimed, and none handed off)
    parks = [h.broker.keys(name).parked for name in ("echo", "echo#1", "echo#2")]
    deadline = time.monotonic() + 10
    while not all([await h.redis.zcard(k) for k in parks]):
        assert time.monotonic() < deadline, "the worker did not park on every shard"
        await asyncio.sleep(0.02)
    ids = [await h.client.enqueue("echo", {"i": i}) for i in range(9)]
    assert sorted(shard_of(i) for i in ids) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for i, job_id in enumerate(ids):
        assert await h.client.result(job_id, 10) == {"i": i}
    # each shard's keys live under their own hash tag
    assert await h.redis.exists("{rt:echo}:job:" + ids[0]) == 1
    assert await h.redis.exists("{rt:echo#1}:job:" + ids[1]) == 1
    assert await h.redis.exists("{rt:echo#2}:job:" + ids[2]) == 1
    assert await h.redis.zscore("{rt}:shards", "echo") == 3
    stats = await h.client.broker.stats("echo")
    assert stats["completed"] == 9 and stats["shards"] == 3
    # an idle worker is parked on every shard: enqueue handed jobs of each shard straight to it
    assert h.dispatcher is not None
    worker = h.dispatcher.workers["echo"]
    assert worker.counters.handoffs > 0


async def test_enqueue_many_retries_and_dead_letters_per_shard(make_harness: MakeHarness) -> None:
    h = await make_harness(SHARDED)
    payloads = [{"i": i, "fail": "once"} for i in range(30)] + [{"fail": "always"}] * 3
    results = await h.client.enqueue_many("echo", payloads)
    ids = [r.job_id for r in results]
    assert all(ids) and {shard_of(i) for i in ids if i} == {0, 1, 2}
    for i in range(30):
        job_id = ids[i]
        assert job_id is not None
        assert await h.client.result(job_id, 10) == {"i": i, "fail": "once"}
    for job_id in ids[30:]:
        assert job_id is not None
        with pytest.raises(JobFailed):
            await h.client.result(job_id, 10)
    stats = await h.client.broker.stats("echo")
    assert (stats["completed"], stats["dead"], stats["retried"]) == (30, 3, 33)


async def test_caller_chosen_ids_and_idempotency_keys(make_harness: MakeHarness) -> None:
    h = await make_harness(SHARDED)
    mine = [await h.client.enqueue("echo", {"i": i}, job_id=f"order-{i}") for i in range(12)]
    assert await h.client.enqueue("echo", {"i": 99}, job_id="order-3") == "echo.order-3"
    spread = set()
    for i, job_id in enumerate(mine):
        assert await h.client.result(job_id, 10) == {"i": i}
        for shard, tag in enumerate(("{rt:echo}", "{rt:echo#1}", "{rt:echo#2}")):
            if await h.redis.exists(f"{tag}:job:{job_id}"):
                spread.add(shard)
    assert spread == {0, 1, 2}
    first = await h.client.enqueue("echo", {"k": 1}, idempotency_key="key-a")
    again = await h.client.enqueue("echo", {"k": 2}, idempotency_key="key-a")
    assert first == again
    assert await h.client.result(first, 10) == {"k": 1}


async def test_a_flooded_shard_starves_none(make_harness: MakeHarness) -> None:
    """Shard 0 holds 2,000 jobs of 20 ms each (5 s of work for 8 slots); jobs put in shards
    1 and 2 afterwards finish while shard 0 still has most of its backlog."""
    slow = SHARDED.replace("return event", "await asyncio.sleep(0.02)\n        return event")
    slow = slow.replace("from runtime import", "import asyncio\n    from runtime import")
    h = await make_harness(slow, start=False)
    chosen = [f"f{i}" for i in range(6000) if own_id_shard(f"f{i}", 3) == 0][:2000]
    flood = await h.client.enqueue_many("echo", [{}] * len(chosen), job_ids=chosen)
    assert all(r.created for r in flood)
    h.start()
    later = [await h.client.enqueue("echo", {"late": i}) for i in range(6)]
    others = [j for j in later if shard_of(j) != 0]
    assert len(others) == 4
    for job_id in others:
        await h.client.result(job_id, 20)
    assert await h.broker.backlog("echo") > 1000


async def test_lowering_shards_loses_nothing(make_harness: MakeHarness) -> None:
    """Jobs enqueued while the function had 3 shards all complete on workers that now
    run it with 1 (the recorded count keeps every shard read)."""
    producer = await make_harness(SHARDED, start=False)
    ids = [await producer.client.enqueue("echo", {"i": i}) for i in range(12)]
    ids += [await producer.client.enqueue("echo", {"i": i}, job_id=f"x-{i}") for i in range(12, 18)]
    assert {shard_of(i) for i in ids[:12]} == {0, 1, 2}
    one = SHARDED.replace("shards=3", "shards=1")
    worker = await make_harness(one)
    for i, job_id in enumerate(ids):
        assert await worker.client.result(job_id, 15) == {"i": i}
    assert (await worker.client.broker.stats("echo"))["completed"] == 18
    # enqueue with one shard uses shard 0 only
    later = [await worker.client.enqueue("echo", {"i": i}) for i in range(4)]
    assert {shard_of(i) for i in later} == {0}


async def test_settle_by_token_goes_to_the_lease_shard(make_harness: MakeHarness) -> None:
    h = await make_harness(SHARDED, start=False)
    ids = [await h.client.enqueue("echo", {"i": i}) for i in range(3)]
    broker = h.broker
    broker.shards["echo"] = 3
    claim = await broker.claim("echo", 10, lease_ms=5000, max_in_flight=0)
    assert sorted(j.id for j in claim.jobs) == sorted(ids)
    tokens = {j.id: j.token for j in claim.jobs}
    assert tokens[ids[0]] == "1" and tokens[ids[1]] == "1@1" and tokens[ids[2]] == "1@2"
    lost, _, _ = await broker.heartbeat("echo", list(tokens.items()), lease_ms=5000)
    assert lost == []
    codes = await broker.settle("echo", [Complete(j, t, b"1") for j, t in tokens.items()])
    assert codes == [1, 1, 1]
    for job_id in ids:
        record = await h.client.job(job_id)
        assert record is not None and record.state == "completed"
    assert (await broker.reclaim("echo", max_recoveries=3)) == (0, 0)
    started = time.monotonic()
    await asyncio.sleep(0)
    assert time.monotonic() - started < 5


async def test_admin_and_backlog_sum_over_the_shards(make_harness: MakeHarness) -> None:
    h = await make_harness(SHARDED)
    dead = [await h.client.enqueue("echo", {"fail": "always"}) for _ in range(3)]
    assert {shard_of(i) for i in dead} == {0, 1, 2}
    for job_id in dead:
        with pytest.raises(JobFailed):
            await h.client.result(job_id, 10)
    await h.stop()
    waiting = [await h.client.enqueue("echo", {"i": i}) for i in range(6)]
    assert {shard_of(i) for i in waiting} == {0, 1, 2}
    admin = Admin(h.redis, "rt")
    (row,) = (await admin.stats(["echo"])).functions
    assert (row.function, row.dead, row.ready["default"]) == ("echo", 3, 6)
    assert row.totals["dead"] == 3
    peek = await admin.peek("echo", is_dlq=True)
    assert peek.total == 3 and sorted(j.id for j in peek.jobs) == sorted(dead)
    peek = await admin.peek("echo", count=4)
    assert peek.total == 6 and len(peek.jobs) == 4
    options = h.registry.get("echo").options
    backlog = await BacklogReader(h.redis, "rt").read("echo", options)
    assert backlog is not None and backlog.ready == 6 and backlog.schedulable == 6
    report = await admin.requeue_dlq("echo", limit=2)
    assert report.matched == 2 and await admin.dlq_length("echo") == 1
    report = await admin.purge_dlq("echo")
    assert report.matched == 1 and await admin.dlq_length("echo") == 0


PACED = """
    import time
    from runtime import function

    STARTS: list[float] = []

    @function(concurrency=50, rate_limit="20/s", rate_burst=3, shards=3)
    async def paced(x: int) -> None:
        STARTS.append(time.monotonic())
"""


async def test_the_rate_limit_holds_across_shards_and_workers(make_harness: MakeHarness) -> None:
    """Two runtimes serve a function of 3 shards limited to 20/s (burst 3): 63 jobs take
    about 3 s, and no second holds more than 20 + 3 starts."""
    first = await make_harness(PACED)
    second = await make_harness(PACED)
    started = time.monotonic()
    results = await first.client.enqueue_many("paced", list(range(63)))
    for result in results:
        assert result.job_id is not None
        await first.client.wait(result.job_id, 15)
    elapsed = time.monotonic() - started
    starts = [
        *first.registry.get("paced").handler.__globals__["STARTS"],
        *second.registry.get("paced").handler.__globals__["STARTS"],
    ]
    assert len(starts) == 63
    starts.sort()
    busiest = max(sum(1 for t in starts[i:] if t - start < 1.0) for i, start in enumerate(starts))
    assert busiest <= 20 + 3
    assert 2.5 <= elapsed < 6
