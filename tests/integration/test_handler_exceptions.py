"""Whatever a handler raises is that attempt's outcome, on every executor: a BaseException
(KeyboardInterrupt, SystemExit, GeneratorExit, a CancelledError the runtime did not ask
for, a custom subclass) fails the attempt as ``handler_error`` and is retried as usual. It
never stops the process, never loops the job, never leaves it holding a lease. The
runtime's own cancellations (the attempt's timeout, a drain, a lost lease) are told apart
by the runtime's own record, so a handler that swallows one cannot keep its lease."""

from __future__ import annotations

import asyncio
import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.client import Client
from tests.integration.conftest import Harness, MakeHarness
from tests.integration.serving import ServeProcesses

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

KINDS = ["KeyboardInterrupt", "SystemExit", "GeneratorExit", "CancelledError", "Custom"]
EXECUTORS = ["async", "thread", "process"]

HANDLERS = """
    import asyncio, time
    from runtime import function

    class Custom(BaseException):
        pass

    def make(kind: str) -> BaseException:
        return {
            "KeyboardInterrupt": KeyboardInterrupt(),
            "SystemExit": SystemExit(3),
            "GeneratorExit": GeneratorExit(),
            "CancelledError": asyncio.CancelledError(),
            "Custom": Custom("from the handler"),
        }[kind]

    @function(max_attempts=2, backoff=(0.01, 0.02), timeout_s=10)
    async def boom_async(kind: str) -> None:
        await asyncio.sleep(0)
        raise make(kind)

    @function(max_attempts=2, backoff=(0.01, 0.02), timeout_s=10, executor="thread")
    def boom_thread(kind: str) -> None:
        raise make(kind)

    @function(max_attempts=2, backoff=(0.01, 0.02), timeout_s=10, executor="process",
              concurrency=1)
    def boom_process(kind: str) -> None:
        raise make(kind)

    @function(timeout_s=10)
    async def fine_async(x: int) -> int:
        return x + 1

    @function(timeout_s=10, executor="thread")
    def fine_thread(x: int) -> int:
        return x + 1

    @function(timeout_s=10, executor="process", concurrency=1)
    def fine_process(x: int) -> int:
        return x + 1

    @function(timeout_s=0.3, max_attempts=1, concurrency=1)
    async def stubborn(seconds: float) -> str:
        # Swallows the runtime's cancellation and carries on.
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            await asyncio.sleep(seconds)
        return "finished anyway"

    @function(timeout_s=60, concurrency=1)
    async def obstinate(seconds: float) -> str:
        # Swallows every cancellation it gets, for ``seconds``.
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                await asyncio.sleep(deadline - time.monotonic())
            except asyncio.CancelledError:
                pass
        return "finished anyway"

    @function(timeout_s=0.3, max_attempts=1, concurrency=1)
    async def swallower(seconds: float) -> str:
        # Swallows the runtime's cancellation and returns a value at once.
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            return "swallowed"
        return "slept"
"""


async def assert_still_serving(h: Harness, executor: str) -> None:
    assert h.dispatcher is not None and h.dispatcher.is_running
    assert await h.client.result(await h.client.enqueue(f"fine_{executor}", 41), 15) == 42


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("kind", KINDS)
async def test_a_base_exception_fails_the_attempt_as_a_handler_error(
    make_harness: MakeHarness, kind: str, executor: str
) -> None:
    h = await make_harness(HANDLERS)
    job_id = await h.client.enqueue(f"boom_{executor}", kind)
    record = await h.client.wait(job_id, 20)
    assert (record.state, record.reason, record.attempts) == ("dead", "handler_error", 2)
    assert record.recoveries == 0  # an attempt that failed, not a crash
    assert record.error is not None and kind in record.error
    # Claimed once per attempt: not released and claimed again in a loop.
    token = await h.redis.hget(f"{{rt:boom_{executor}}}:job:{job_id}", "tok")
    assert token is not None and int(token) <= 2
    await assert_still_serving(h, executor)


async def test_a_timed_out_handler_that_swallows_the_cancellation_frees_its_lease(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(HANDLERS)
    assert h.dispatcher is not None
    worker = h.dispatcher.workers["stubborn"]
    started = time.monotonic()
    job_id = await h.client.enqueue("stubborn", 5.0)
    record = await h.client.wait(job_id, 20)
    assert (record.state, record.reason, record.attempts) == ("dead", "timeout", 1)
    assert time.monotonic() - started < 6  # its timeout and a grace, not its 10 s
    assert await h.redis.zcard("{rt:stubborn}:leased") == 0
    # Its slot stays taken while the abandoned handler really runs, and comes back after.
    assert worker.running == 1
    assert await h.client.result(await h.client.enqueue("stubborn", 0.01), 20) == (
        "finished anyway"
    )
    assert worker.running == 0


async def test_a_timed_out_handler_that_returns_anyway_is_a_timeout(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(HANDLERS)
    record = await h.client.wait(await h.client.enqueue("swallower", 30.0), 20)
    assert (record.state, record.reason) == ("dead", "timeout")


async def test_a_drain_ends_a_handler_that_swallows_the_cancellation(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(HANDLERS, shutdown_grace_s=0.2)
    # 5 s: longer than the drain may take (4 s, below), so a drain that waited for the
    # handler fails; not 30 s, which the test's teardown then waited out (28.8 s a run).
    job_id = await h.client.enqueue("obstinate", 5.0)
    await wait_until_running(h, "obstinate", job_id)
    started = time.monotonic()
    await h.stop(grace_s=0.2)
    elapsed = time.monotonic() - started
    print(f"drain took {elapsed:.2f}s")
    assert elapsed < 4
    record = await h.client.job(job_id)
    assert record is not None and record.state == "queued"  # released, not lost
    assert record.attempts == 0


async def wait_until_running(h: Harness, function: str, job_id: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        record = await h.client.job(job_id)
        if record is not None and record.state == "running":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{function} job {job_id} never ran")


# -- a real `runtime serve` process ------------------------------------------------------


@pytest.fixture
def serve(tmp_path: Path, redis_url: str) -> Iterator[tuple[ServeProcesses, Path]]:
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    processes = ServeProcesses(tmp_path, redis_url, {"RUNTIME_LOG__LEVEL": "WARNING"})
    yield processes, folder
    processes.stop_all()


@pytest.mark.slow
async def test_runtime_serve_outlives_a_handler_raising_keyboard_interrupt(
    serve: tuple[ServeProcesses, Path], redis_url: str
) -> None:
    processes, folder = serve
    process = processes.spawn("--functions", str(folder))
    processes.wait_ready(process)
    async with Client(redis_url) as client:
        ids = [await client.enqueue("boom_async", k) for k in ("KeyboardInterrupt", "SystemExit")]
        for job_id in ids:
            record = await client.wait(job_id, 20)
            assert (record.state, record.reason) == ("dead", "handler_error"), processes.logs()
        assert process.poll() is None, processes.logs()
        assert processes.ready(process)[0] == 200
        assert await client.result(await client.enqueue("fine_async", 1), 10) == 2
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
