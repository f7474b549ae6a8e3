"""The supervisor restarts a failing task, reports it down only while it is down, and stops
within its deadline even when a task swallows its cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import pytest

from runtime.observe import rejects, supervisor
from runtime.observe.metrics import Metrics
from runtime.observe.supervisor import Supervisor

pytestmark = pytest.mark.timeout(20)


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 (polls the supervisor's state)
            await asyncio.sleep(0.01)


async def test_a_failing_task_is_logged_counted_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    healthy = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise RuntimeError(f"boom {runs}")
        healthy.set()
        await asyncio.Event().wait()

    before = supervisor.FAILURES["flaky"]
    sup = Supervisor("test")
    with caplog.at_level(logging.ERROR, "runtime.supervisor"):
        sup.spawn("flaky:one", loop)
        await _until(lambda: "flaky:one" in sup.down)
        assert "RuntimeError: boom" in sup.down["flaky:one"]
        assert not sup.is_up
        await asyncio.wait_for(healthy.wait(), 10)
        await _until(lambda: sup.is_up)  # up again once the new run lasted a moment
    assert runs == 3
    assert supervisor.FAILURES["flaky"] - before == 2
    failures = [r for r in caplog.records if "task flaky:one failed" in r.getMessage()]
    assert len(failures) == 2 and failures[0].exc_info is not None  # with its traceback
    assert await sup.stop() == []


async def test_a_cancellation_from_inside_is_a_failure_not_an_end() -> None:
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise asyncio.CancelledError()  # not requested by the supervisor
        await asyncio.Event().wait()

    sup = Supervisor("test")
    task = sup.spawn("inner:x", loop)
    await _until(lambda: runs == 2)
    assert not task.done()
    await sup.stop()
    assert task.cancelled()


async def test_a_task_that_returns_ends_without_restart() -> None:
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1

    sup = Supervisor("test")
    task = sup.spawn("once", loop)
    await task
    assert runs == 1 and sup.is_up


async def test_stop_is_bounded_when_a_task_swallows_cancellation() -> None:
    stubborn = True

    async def loop() -> None:
        while stubborn:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(10)

    sup = Supervisor("test")
    sup.spawn("stubborn", loop)
    await asyncio.sleep(0)
    started = asyncio.get_running_loop().time()
    left = await sup.stop(timeout_s=0.5)
    elapsed = asyncio.get_running_loop().time() - started
    assert left == ["stubborn"]
    assert elapsed < 5.0  # bounded (0.5 s plus scheduling on a loaded machine)
    stubborn = False


async def test_stop_of_a_task_that_yields_to_cancellation_after_a_few_tries() -> None:
    swallowed = 0

    async def loop() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed >= 3:
                    raise

    sup = Supervisor("test")
    task = sup.spawn("slow-to-stop", loop)
    await asyncio.sleep(0)
    assert await sup.stop(timeout_s=10) == []
    assert task.done() and swallowed == 3


def test_rejects_are_counted_and_logged_at_most_once_per_quiet_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = rejects.REJECTED["test_source"]
    with caplog.at_level(logging.WARNING, "runtime.rejects"):
        for i in range(50):
            rejects.reject("test_source", f"bad {rejects.sample(bytes([i]) * 500)}")
    assert rejects.REJECTED["test_source"] - before == 50
    lines = [r.getMessage() for r in caplog.records if "test source" in r.getMessage()]
    assert len(lines) <= 1
    assert all(len(line) < 400 for line in lines)


def test_metrics_expose_rejects_and_task_failures() -> None:
    rejects.REJECTED["wake_channel"] += 0  # present even at zero once seen
    supervisor.FAILURES["claim"] += 0
    text = Metrics([]).exposition().decode()
    assert 'runtime_inputs_rejected_total{source="wake_channel"}' in text
    assert 'runtime_task_failures_total{task="claim"}' in text
