"""The quarantine gate: suspect jobs run alone, ordinary jobs share, suspects go first."""

from __future__ import annotations

import asyncio

import pytest

from runtime.execution.quarantine import Quarantine
from runtime.jobs.suspects import is_suspect


@pytest.mark.parametrize(
    ("recoveries", "max_recoveries", "suspect"),
    [(0, 3, False), (1, 3, False), (2, 3, True), (5, 3, True), (1, 1, True), (0, 0, False)],
)
def test_is_suspect(recoveries: int, max_recoveries: int, suspect: bool) -> None:
    assert is_suspect(recoveries, max_recoveries) is suspect


async def test_ordinary_jobs_share_without_waiting() -> None:
    gate = Quarantine()
    async with gate.ordinary(), gate.ordinary():
        assert not gate.is_holding_suspect


async def test_suspect_waits_for_ordinary_jobs_and_blocks_new_ones() -> None:
    gate = Quarantine()
    log: list[str] = []
    release_first = asyncio.Event()

    async def ordinary(tag: str, hold: asyncio.Event | None = None) -> None:
        async with gate.ordinary():
            log.append(f"{tag} in")
            if hold is not None:
                await hold.wait()
            log.append(f"{tag} out")

    async def suspect() -> None:
        async with gate.suspect():
            log.append("suspect in")
            await asyncio.sleep(0.01)
            log.append("suspect out")

    first = asyncio.create_task(ordinary("a", release_first))
    await asyncio.sleep(0)
    s = asyncio.create_task(suspect())
    await asyncio.sleep(0)
    late = asyncio.create_task(ordinary("b"))  # arrives while the suspect waits
    await asyncio.sleep(0.01)
    assert log == ["a in"]  # the suspect waits for a; b waits behind the suspect
    release_first.set()
    await asyncio.gather(first, s, late)
    assert log == ["a in", "a out", "suspect in", "suspect out", "b in", "b out"]


async def test_cancelled_suspect_does_not_block_the_gate() -> None:
    gate = Quarantine()
    hold = asyncio.Event()

    async def ordinary() -> None:
        async with gate.ordinary():
            await hold.wait()

    running = asyncio.create_task(ordinary())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(gate.suspect().__aenter__())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    async with asyncio.timeout(1):
        async with gate.ordinary():  # no suspect is waiting any more: enters at once
            pass
    hold.set()
    await running


async def test_ordinary_job_waiting_behind_a_cancelled_suspect_proceeds() -> None:
    gate = Quarantine()
    hold = asyncio.Event()
    entered = asyncio.Event()

    async def ordinary(event: asyncio.Event | None) -> None:
        async with gate.ordinary():
            if event is not None:
                event.set()
            else:
                await hold.wait()

    running = asyncio.create_task(ordinary(None))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(gate.suspect().__aenter__())
    await asyncio.sleep(0)
    blocked = asyncio.create_task(ordinary(entered))
    await asyncio.sleep(0.01)
    assert not entered.is_set()  # held back by the waiting suspect
    waiting.cancel()
    async with asyncio.timeout(1):
        await entered.wait()
    hold.set()
    await asyncio.gather(running, blocked, return_exceptions=True)
