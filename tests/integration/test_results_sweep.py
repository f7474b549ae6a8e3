"""Completed jobs' records go keep_result_s after completion: listed in the results zset by
settle (one ZADD a batch instead of an EXPIRE per job) and deleted by the sweep that settle
and reclaim run, so they go on time on a busy function and on an idle one alike."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.conftest import MakeHarness

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

HELLO = """
    from runtime import function

    @function(concurrency=16)
    async def hello(event: dict) -> str:
        return "hi"
"""
RESULTS = "{rt:hello}:results"


async def test_completed_records_are_removed_after_keep_result_s_on_an_idle_function(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(HELLO, keep_result_s=1)
    ids = [r.job_id for r in await h.client.enqueue_many("hello", [{}] * 50)]
    assert await h.client.result(str(ids[-1]), 10) == "hi"
    for job_id in ids:
        assert (await h.client.job(str(job_id))) is not None  # kept for now
    # Nothing settles any more: only the reclaimer's sweep can remove them.
    keys = [h.broker.keys("hello").job(str(i)) for i in ids]
    async with asyncio.timeout(20):
        while (left := await h.setup.exists(*keys)) > 0:
            assert left <= len(ids)
            await asyncio.sleep(0.1)
    assert await h.setup.zcard(RESULTS) == 0


async def test_results_are_listed_until_due_with_their_removal_time(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(HELLO, keep_result_s=600)
    job_id = await h.client.enqueue("hello", {})
    await h.client.result(job_id, 10)
    record = await h.client.job(job_id)
    assert record is not None and record.finished_ms is not None
    ends_ms = record.finished_ms
    score = await h.setup.zscore(RESULTS, job_id)
    assert score is not None and int(score) == ends_ms + 600_000
    assert await h.setup.ttl(h.broker.keys("hello").job(job_id)) == -1  # no EXPIRE per job


async def test_a_reused_own_id_whose_old_record_went_is_not_swept(
    make_harness: MakeHarness,
) -> None:
    """A caller's own id, completed and listed for removal, whose record went early (deleted
    by hand, evicted): a new job under that id must not be deleted by the old listing."""
    h = await make_harness(HELLO, keep_result_s=600)
    job_id = await h.client.enqueue("hello", {}, job_id="mine")
    await h.client.result(job_id, 10)
    assert await h.setup.zscore(RESULTS, job_id) is not None
    await h.setup.delete(h.broker.keys("hello").job(job_id))
    await h.stop()
    again, created = await h.client.producer.enqueue("hello", {}, job_id="mine")
    assert (again, created) == (job_id, True)
    assert await h.setup.zscore(RESULTS, job_id) is None
