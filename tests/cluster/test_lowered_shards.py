"""A function whose shard count was lowered live (3 -> 1) on Redis Cluster: a job that an
old producer puts in a shard above the new count is woken (or handed over) at once, not
found by the idle poll. On a cluster each shard publishes in its own slot, so the
dispatcher must listen on every shard that is still claimed (the highest recorded count)."""

from __future__ import annotations

import time

import pytest

from runtime.queue.shards import own_id_shard
from tests.integration.conftest import MakeHarness
from tests.integration.test_shards import SHARDED

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

IDLE_POLL_S = 30.0  # far longer than a wake takes: a job found by the poll fails the test
WOKEN_WITHIN_S = 5.0


def ids_in_shard(shard: int, count: int) -> list[str]:
    ids = (f"late-{k}" for k in range(1000))
    return [i for i in ids if own_id_shard(i, 3) == shard][:count]


@pytest.mark.parametrize("shard", [1, 2])
async def test_a_job_above_a_lowered_count_is_woken(make_harness: MakeHarness, shard: int) -> None:
    producer = await make_harness(SHARDED, start=False)  # an old producer: 3 shards
    first = await producer.client.enqueue("echo", {"i": 0}, job_id="first")
    one = SHARDED.replace("shards=3", "shards=1")
    worker = await make_harness(
        one, idle_poll_s=IDLE_POLL_S, heartbeat_s=IDLE_POLL_S, lease_s=3 * IDLE_POLL_S
    )
    assert await worker.client.result(first, 15) == {"i": 0}  # the worker runs and is idle
    for i, job_id in enumerate(ids_in_shard(shard, 2), start=1):
        started = time.monotonic()
        made = await producer.client.enqueue("echo", {"i": i}, job_id=job_id)
        assert await worker.client.result(made, 2 * IDLE_POLL_S) == {"i": i}
        took = time.monotonic() - started
        assert took < WOKEN_WITHIN_S, f"job {i} in shard {shard} waited {took:.1f}s"
