"""The run history (``{ns:fn}:history``): written per settle batch (about no command per
job), it lists exactly the finished runs whose records exist: completed and cancelled ones
leave with the results sweep, dead ones with their purge. Pages are exact across runs that
finished in the same millisecond, and entries that Redis holds wrongly are skipped."""

from __future__ import annotations

import asyncio

import pytest

from runtime.cli.main import run
from tests.integration.conftest import MakeHarness

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

HANDLERS = """
    from runtime import Reject, function

    @function(concurrency=32)
    async def work(x: int) -> int:
        if x < 0:
            raise Reject("negative")
        return x
"""
HISTORY = "{rt:work}:history"


async def _ids(h: object, **filters: object) -> list[str]:
    out, cursor = [], None
    while True:
        page = await h.client.history("work", cursor=cursor, **filters)  # type: ignore[attr-defined]
        out += [run.id for run in page.jobs]
        cursor = page.next_cursor
        if cursor is None:
            return out


async def test_history_follows_the_records(make_harness: MakeHarness, redis_url: str) -> None:
    h = await make_harness(HANDLERS, keep_result_s=1)
    done = [r.job_id for r in await h.client.enqueue_many("work", list(range(20)))]
    dead = [await h.client.enqueue("work", -1), await h.client.enqueue("work", -2)]
    cancelled = await h.client.enqueue("work", 1, delay_s=60)
    await h.client.cancel(cancelled)
    for job_id in [*done, *dead]:
        await h.client.wait(str(job_id), 10)
    assert sorted(await _ids(h)) == sorted([*map(str, done), *dead, cancelled])
    # keep_result_s later the sweep takes completed and cancelled records, and their entries
    async with asyncio.timeout(20):
        while (listed := await h.setup.zcard(HISTORY)) > len(dead):
            assert listed <= len(done) + len(dead) + 1
            await asyncio.sleep(0.1)
    assert sorted(await _ids(h)) == sorted(dead)  # dead jobs stay until purged
    assert await asyncio.to_thread(run, ["purge-dlq", "work", "--yes", "--redis", redis_url]) == 0
    assert await h.setup.zcard(HISTORY) == 0


async def test_the_history_costs_far_less_than_a_command_per_job(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(HANDLERS)
    ids = [r.job_id for r in await h.client.enqueue_many("work", list(range(400)))]
    before = await h.setup.info("commandstats")
    for job_id in ids:
        await h.client.wait(str(job_id), 10)
    after = await h.setup.info("commandstats")

    def calls(name: str) -> int:
        return int(after.get(name, {}).get("calls", 0)) - int(before.get(name, {}).get("calls", 0))

    assert await h.setup.zcard(HISTORY) == 400
    # results and history: one ZADD each per settle batch (plus the waits' own reads)
    assert calls("cmdstat_zadd") / 400 < 0.25, calls("cmdstat_zadd")


async def test_pages_are_exact_across_runs_that_ended_in_the_same_ms(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(HANDLERS, start=False)
    ids = [f"work.same{i:02d}" for i in range(30)]
    pipe = h.setup.pipeline(transaction=False)
    for i, job_id in enumerate(ids):
        score = 1_764_676_800_000 + (i // 10)  # three groups of ten in the same ms
        pipe.hset(f"{{rt:work}}:job:{job_id}", mapping={"state": "completed", "end": score})
        pipe.zadd(HISTORY, {job_id: score})
    # what a reader must skip: an entry with no record, one with a live record, a bad key
    pipe.zadd(HISTORY, {"work.gone": 1_764_676_800_001, "work.live": 1_764_676_800_001})
    pipe.hset("{rt:work}:job:work.live", mapping={"state": "queued"})
    pipe.zadd(HISTORY, {"work.str": 1_764_676_800_002})
    pipe.set("{rt:work}:job:work.str", "not a hash")
    pipe.zadd(HISTORY, {b"work.\xff": 1_764_676_800_002})
    await pipe.execute()
    for limit in (1, 7, 10, 30):
        got = await _ids(h, limit=limit)
        assert sorted(got) == sorted(ids) and len(got) == 30, limit
    newest = await h.client.history("work", limit=10)
    assert {r.finished_ms for r in newest.jobs} == {1_764_676_800_002}
    until = await _ids(h, until_ms=1_764_676_800_001, since_ms=1_764_676_800_001)
    assert sorted(until) == ids[10:20]
