"""ctx.progress: validated and bounded in the Context, throttled to one write per interval
by the worker's ProgressReporter (a fake clock; the loop's own timers, no sleeps beyond
the loop's turns), and parsed totally when read back from a record."""

from __future__ import annotations

import asyncio
import threading

import msgspec
import pytest

from runtime.context import Context
from runtime.execution.progress import ProgressReporter
from runtime.jobs import progress as progress_field
from runtime.jobs.progress import Progress
from runtime.jobs.records import as_record


def test_context_validates_and_bounds_reports() -> None:
    seen: list[tuple[float, str]] = []
    ctx = Context.for_test(progress=lambda f, m: seen.append((f, m)))
    ctx.progress(0)
    ctx.progress(1, "done")
    ctx.progress(0.5, "x" * 1000)
    assert seen[:2] == [(0.0, ""), (1.0, "done")]
    assert len(seen[2][1]) == 200 and seen[2][1].endswith("\u2026")
    for bad in (-0.1, 1.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"in \[0, 1\]"):
            ctx.progress(bad)
    for wrong in (True, "0.5", None):
        with pytest.raises(TypeError):
            ctx.progress(wrong)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ctx.progress(0.5, b"bytes")  # type: ignore[arg-type]
    assert len(seen) == 3
    Context.for_test().progress(0.5)  # no sink (a process child, a test): ignored
    assert not Context.for_test().cancelled.is_set()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_reports_are_throttled_and_the_latest_wins() -> None:
    written: list[Progress] = []

    async def write(value: bytes) -> bool:
        written.append(msgspec.json.decode(value, type=Progress))
        return True

    clock = Clock()
    reporter = ProgressReporter(write, interval_s=0.05, clock=clock, wall_ms=lambda: 7)
    reporter.report(0.1, "a")  # written at once
    for i in range(2, 10):
        reporter.report(i / 10, str(i))  # within the interval: only the latest stays
    for _ in range(3):
        await asyncio.sleep(0)
    assert [p.fraction for p in written] == [0.1]
    clock.now += 0.05
    await asyncio.sleep(0.06)  # the trailing write's timer, on the loop's clock
    assert [p.message for p in written] == ["a", "9"] and reporter.writes == 2
    assert written[-1] == Progress(0.9, "9", 7)
    reporter.report(0.95, "last")  # waits its turn ...
    reporter.close()  # ... and the end of the attempt writes it at once
    reporter.report(1.0, "after")  # the attempt is over: nothing more is written
    await asyncio.sleep(0.06)
    assert reporter.writes == 3 and written[-1].message == "last"


async def test_a_report_from_a_handler_thread_reaches_the_loop() -> None:
    written: list[bytes] = []

    async def write(value: bytes) -> bool:
        written.append(value)
        return True

    reporter = ProgressReporter(write)
    thread = threading.Thread(target=reporter.report, args=(0.5, "from a thread"))
    thread.start()
    thread.join()
    for _ in range(20):
        if written:
            break
        await asyncio.sleep(0.01)
    assert b"from a thread" in written[0]


async def test_a_failed_write_is_dropped_and_the_next_goes() -> None:
    calls = 0

    async def write(value: bytes) -> bool:
        nonlocal calls
        calls += 1
        raise ConnectionError("redis away")

    reporter = ProgressReporter(write, interval_s=0.0)
    reporter.report(0.1, "")
    await asyncio.sleep(0.01)
    reporter.report(0.2, "")
    await asyncio.sleep(0.01)
    assert calls == 2


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"fraction": 2.0}',
        b'{"fraction": 0.5, "message": 3}',
        b'{"fraction": 0.5, "extra": 1}',
        b'{"fraction": 0.5, "at_ms": -1}',
        b'{"fraction": 0.5, "message": "' + b"x" * 300 + b'"}',
        b"[" * 5000,
        b"x" * 5000,
    ],
)
def test_a_bad_stored_progress_reads_as_corrupt_never_raises(raw: bytes) -> None:
    assert isinstance(progress_field.parse(raw), str)
    record = as_record("f.1", "f", {b"state": b"running", b"prg": raw})
    assert record.progress is None and record.corrupt and "prg" in record.corrupt


def test_a_cancel_request_is_read_even_when_its_time_is_not() -> None:
    good = as_record("f.1", "f", {b"state": b"running", b"cxl": b"1764676800123"})
    assert good.cancel_requested_ms == 1764676800123 and good.corrupt is None
    bad = as_record("f.1", "f", {b"state": b"running", b"cxl": b"soon"})
    assert bad.cancel_requested_ms == 0 and bad.corrupt and "cxl" in bad.corrupt
    cancelled = as_record("f.1", "f", {b"state": b"cancelled"})
    assert cancelled.is_terminal and cancelled.corrupt is None
