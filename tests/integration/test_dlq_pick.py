"""The console's DLQ selection: purge or requeue chosen ids (``Admin.pick_dlq``, the
'pick' mode of ``purge_dlq.lua`` and ``requeue_dlq.lua``), each call atomic."""

from __future__ import annotations

import pytest

from runtime.queue.admin import Admin
from runtime.queue.keys import FunctionKeys
from tests.integration.conftest import MakeHarness

pytestmark = pytest.mark.integration

HANDLERS = """
    from runtime import Reject, function

    @function(max_attempts=1)
    async def doomed(n: int) -> int:
        raise Reject(f"no thanks {n}")
"""
K = FunctionKeys("rt", "doomed")


async def test_picked_entries_are_purged_or_requeued_and_the_rest_keep_their_order(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(HANDLERS)
    ids = [await h.client.enqueue("doomed", i) for i in range(5)]
    for job_id in ids:
        assert (await h.client.wait(job_id, 5)).state == "dead"  # type: ignore[union-attr]
    await h.stop()  # nothing runs a requeued job again: its state is what the pick left
    order = [i.decode() for i in await h.redis.lrange(K.dlq, 0, -1)]
    assert sorted(order) == sorted(ids)
    admin = Admin(h.redis, "rt")

    chosen = [order[1], order[3], order[3], "doomed.not-in-the-dlq"]
    report = await admin.pick_dlq("doomed", "purge", chosen)
    assert (report.action, report.matched, report.scanned, report.dlq_length) == ("purge", 2, 2, 5)
    assert (report.dlq_left, report.by_reason) == (3, {"rejected": 2})
    assert {m.id for m in report.sample} == {order[1], order[3]}
    left = [order[0], order[2], order[4]]
    assert [i.decode() for i in await h.redis.lrange(K.dlq, 0, -1)] == left
    assert not await h.redis.exists(K.job(order[1]), K.job(order[3]))

    report = await admin.pick_dlq("doomed", "requeue", [order[2]])
    assert (report.action, report.matched, report.dlq_left) == ("requeue", 1, 2)
    record = await h.client.job(order[2])
    assert record is not None and (record.state, record.attempts, record.reason) == (
        "queued", 0, None,
    )  # fmt: skip
    assert [i.decode() for i in await h.redis.lrange(K.lanes[1], 0, -1)] == [order[2]]
    assert [i.decode() for i in await h.redis.lrange(K.dlq, 0, -1)] == [order[0], order[4]]

    # Picked again: no longer in the DLQ, nothing happens to the queued job.
    report = await admin.pick_dlq("doomed", "requeue", [order[2]])
    assert (report.matched, report.scanned, report.dlq_left) == (0, 0, 2)
    assert (await h.client.job(order[2])).state == "queued"  # type: ignore[union-attr]

    with pytest.raises(ValueError, match="must be 'purge' or 'requeue'"):
        await admin.pick_dlq("doomed", "delete", [order[0]])
    with pytest.raises(ValueError, match="0 ids chosen"):
        await admin.pick_dlq("doomed", "purge", [])


async def test_a_pick_looks_only_where_the_entries_were_shown(make_harness: MakeHarness) -> None:
    """In a deep DLQ the chosen ids are found around the page they were shown on (one
    bounded window): the same id named with a far-off position is left alone."""
    h = await make_harness(HANDLERS, start=False)
    ghosts = [f"doomed.ghost{i:05d}" for i in range(5000)]  # no records: stale entries
    await h.redis.rpush(K.dlq, *ghosts)
    admin = Admin(h.redis, "rt")
    deep = ghosts[1000]  # 3999 entries from the tail
    report = await admin.pick_dlq("doomed", "purge", [deep], from_tail=0)
    assert (report.scanned, report.stale, report.dlq_left) == (0, 0, 5000)
    report = await admin.pick_dlq("doomed", "purge", [deep, ghosts[1003]], from_tail=3950)
    assert (report.scanned, report.matched, report.stale, report.dlq_left) == (2, 0, 2, 4998)
    rest = [i.decode() for i in await h.redis.lrange(K.dlq, 0, -1)]
    assert rest == [g for g in ghosts if g not in (deep, ghosts[1003])]
