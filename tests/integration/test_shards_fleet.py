"""The limits of a sharded function hold fleet-wide: two real `runtime serve` processes run
a function of 3 shards with ``max_in_flight=4``; the runs' own start and finish times never
overlap more than 4 deep."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.client import Client
from runtime.queue.shards import made_suffix_shard
from tests.integration.serving import ServeProcesses

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]

HANDLERS = """
    import asyncio
    import time

    from runtime import function

    @function(shards=3, max_in_flight=4, concurrency=8)
    async def hold(event: int) -> list[float]:
        started = time.time()
        await asyncio.sleep(0.05)
        return [started, time.time()]
"""


@pytest.fixture
def serve(tmp_path: Path, redis_url: str) -> Iterator[tuple[ServeProcesses, Path]]:
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    processes = ServeProcesses(tmp_path, redis_url, {"RUNTIME_LOG__LEVEL": "WARNING"})
    yield processes, folder
    processes.stop_all()


def deepest_overlap(runs: list[tuple[float, float]]) -> int:
    """The most runs in progress at one moment (a finish before a start at a tie)."""
    events = sorted([(s, 1) for s, _ in runs] + [(e, -1) for _, e in runs])
    depth = deepest = 0
    for _, step in events:
        depth += step
        deepest = max(deepest, depth)
    return deepest


async def test_max_in_flight_holds_across_shards_and_processes(
    serve: tuple[ServeProcesses, Path], redis_url: str
) -> None:
    processes, folder = serve
    first = processes.spawn("--functions", str(folder))
    second = processes.spawn("--functions", str(folder))
    processes.wait_ready(first)
    processes.wait_ready(second)
    async with Client(redis_url) as client:
        results = await client.enqueue_many("hold", list(range(120)))
        ids = [r.job_id for r in results]
        assert all(ids), results
        shards = {made_suffix_shard(i.split(".", 1)[1]) for i in ids if i}
        assert shards == {0, 1, 2}  # no registry: spread over the recorded count
        runs = []
        for job_id in ids:
            assert job_id is not None
            started, ended = await client.result(job_id, 60)
            runs.append((started, ended))
    deepest = deepest_overlap(runs)
    print(f"deepest overlap: {deepest} of max_in_flight=4 (120 runs of 50 ms, 2 processes)")
    assert 2 <= deepest <= 4, processes.logs()
