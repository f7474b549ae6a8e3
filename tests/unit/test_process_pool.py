"""The process pool against real child processes (``python -m runtime.execution.process_worker``).

Each test starts its own pool and closes it; handlers live in a tmp_path file. No sockets.
"""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from runtime.errors import Reject, Retry
from runtime.execution.process_pool import ChildCrashed, ProcessPool, RemoteError
from runtime.jobs.outcome import Failed, classify

HANDLERS = """
import os
import signal
import sys
import time

import msgspec

from runtime import Context, Reject, Retry, function


class Pair(msgspec.Struct, forbid_unknown_fields=True):
    a: int
    b: int


@function(executor="process")
def add(event: Pair, ctx: Context) -> dict:
    return {
        "sum": event.a + event.b,
        "pid": os.getpid(),
        "job_id": ctx.job_id,
        "function": ctx.function,
        "attempt": ctx.attempt,
        "params": dict(ctx.params),
        "remaining_ok": 0 < ctx.remaining_s <= 30,
    }


@function(executor="process")
def pid(event) -> int:
    return os.getpid()


@function(executor="process")
def retry_later(event) -> None:
    raise Retry(delay_s=1.5, reason="not yet")


@function(executor="process")
def reject(event) -> None:
    raise Reject("bad input")


@function(executor="process")
def fail(event) -> None:
    raise ValueError(f"boom {event}")


@function(executor="process")
def sleep(event: dict) -> None:
    open(event["marker"], "w").close()
    time.sleep(event["seconds"])


@function(executor="process")
def die(event) -> None:
    sys.stdout.flush()
    os._exit(3)


@function(executor="process")
def noisy(event) -> dict:
    print("~" * 100_000)
    print("hello from print")
    sys.stdout.write("hello from sys.stdout\\n")
    sys.stdout.flush()
    os.write(1, b"hello from fd 1\\n")
    try:
        input()
    except EOFError:
        stdin = "eof"
    return {"ok": True, "stdin": stdin}


@function(executor="process")
def unserialisable(event) -> object:
    return object()


@function
async def on_loop(event) -> None:
    return None


@function(executor="process")
def chatty(event, ctx: Context) -> None:
    ctx.log.info("working on it")
"""


def pack(value: Any) -> bytes:
    return msgspec.msgpack.encode(value)


def is_alive(pid: int) -> bool:
    """True while the pid exists; a zombie counts as alive, so False also means reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def handlers(tmp_path: Path) -> Path:
    path = tmp_path / "handlers.py"
    path.write_text(textwrap.dedent(HANDLERS), encoding="utf-8")
    return path


@pytest.fixture
async def pool() -> AsyncIterator[ProcessPool]:
    pool = ProcessPool(1, start_timeout_s=20)
    yield pool
    pids = pool.pids
    await pool.close()
    assert not [p for p in pids if is_alive(p)]


async def run(
    pool: ProcessPool, handlers: Path, attr: str, event: Any = None, *, timeout_s: float = 10
) -> Any:
    return await pool.run(
        str(handlers), attr, pack(event), job_id=f"{attr}.1", function=attr, attempt=2,
        timeout_s=timeout_s, params={"root": "/srv"},
    )  # fmt: skip


async def wait_for_file(path: Path, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():  # noqa: ASYNC240 - one stat of a local file per poll
        assert time.monotonic() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.01)


async def test_handler_result_and_context_cross_the_boundary(
    pool: ProcessPool, handlers: Path
) -> None:
    result = await run(pool, handlers, "add", {"a": 2, "b": 40})
    assert result == {
        "sum": 42,
        "pid": pool.pids[0],
        "job_id": "add.1",
        "function": "add",
        "attempt": 2,
        "params": {"root": "/srv"},
        "remaining_ok": True,
    }
    assert result["pid"] != os.getpid()


async def test_a_child_is_reused_across_jobs(pool: ProcessPool, handlers: Path) -> None:
    first = await run(pool, handlers, "pid")
    second = await run(pool, handlers, "pid")
    assert first == second
    assert pool.pids == [first]


async def test_retry_crosses_the_boundary(pool: ProcessPool, handlers: Path) -> None:
    with pytest.raises(Retry) as info:
        await run(pool, handlers, "retry_later")
    assert (info.value.delay_s, info.value.reason) == (1.5, "not yet")


async def test_reject_crosses_the_boundary(pool: ProcessPool, handlers: Path) -> None:
    with pytest.raises(Reject) as info:
        await run(pool, handlers, "reject")
    assert info.value.reason == "bad input"


async def test_handler_exception_becomes_remote_error_and_the_child_survives(
    pool: ProcessPool, handlers: Path
) -> None:
    before = await run(pool, handlers, "pid")
    with pytest.raises(RemoteError) as info:
        await run(pool, handlers, "fail", 7)
    assert str(info.value) == "ValueError: boom 7"
    assert (info.value.type_name, info.value.message) == ("ValueError", "boom 7")
    tb = info.value.remote_traceback  # the child's traceback crosses (issue 14)
    assert tb.startswith("Traceback (most recent call last):") and "boom 7" in tb
    assert classify(info.value) == Failed("handler_error", "ValueError: boom 7", traceback=tb)
    assert await run(pool, handlers, "pid") == before


async def test_payload_that_does_not_match_the_type_is_a_remote_error(
    pool: ProcessPool, handlers: Path
) -> None:
    with pytest.raises(RemoteError) as info:
        await run(pool, handlers, "add", {"a": "two", "b": 1})
    assert str(info.value) == "ValidationError: add: $.a: expected int, got str"


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        ("unserialisable", "TypeError: the result of unserialisable is not serialisable"),
        ("on_loop", "TypeError: "),
        ("no_such_attr", "AttributeError: "),
    ],
)
async def test_handler_misuse_is_a_remote_error(
    pool: ProcessPool, handlers: Path, attr: str, expected: str
) -> None:
    with pytest.raises(RemoteError) as info:
        await run(pool, handlers, attr)
    assert str(info.value).startswith(expected)


async def test_missing_handler_file_is_a_remote_error(pool: ProcessPool, tmp_path: Path) -> None:
    missing = tmp_path / "gone.py"
    with pytest.raises(RemoteError) as info:
        await run(pool, missing, "f")
    assert str(info.value) == f"FileNotFoundError: handler file not found: {missing.resolve()}"


async def test_timeout_kills_the_child(pool: ProcessPool, handlers: Path, tmp_path: Path) -> None:
    child = await run(pool, handlers, "pid")
    marker = tmp_path / "started"
    started = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        await run(pool, handlers, "sleep", {"marker": str(marker), "seconds": 30}, timeout_s=0.5)
    assert time.monotonic() - started < 5
    assert marker.exists()  # the handler really was running
    assert str(info.value) == (
        f"job sleep.1 (sleep) did not finish within timeout_s=0.5; "
        f"killed process worker pid {child}"
    )
    assert not is_alive(child)
    assert pool.pids == []
    assert await run(pool, handlers, "pid") != child  # a fresh child takes the next job


async def test_os_exit_is_child_crashed_and_the_pool_recovers(
    pool: ProcessPool, handlers: Path
) -> None:
    child = await run(pool, handlers, "pid")
    with pytest.raises(ChildCrashed) as info:
        await run(pool, handlers, "die")
    assert str(info.value) == (
        f"process worker pid {child} exited with code 3 while running job die.1 (die)"
    )
    assert not is_alive(child)
    assert pool.pids == []
    assert (await run(pool, handlers, "add", {"a": 1, "b": 1}))["sum"] == 2
    fresh = await run(pool, handlers, "pid")
    assert fresh != child
    assert pool.pids == [fresh]


async def test_cancelling_run_kills_the_child(
    pool: ProcessPool, handlers: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    task = asyncio.create_task(
        run(pool, handlers, "sleep", {"marker": str(marker), "seconds": 30}, timeout_s=60)
    )
    await wait_for_file(marker)
    [child] = pool.pids
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not is_alive(child)
    assert pool.pids == []


async def test_close_leaves_no_child_processes(handlers: Path) -> None:
    pool = ProcessPool(3, start_timeout_s=20)
    pids = set(await asyncio.gather(*(run(pool, handlers, "pid") for _ in range(3))))
    assert len(pids) == 3
    assert sorted(pids) == pool.pids
    assert all(is_alive(p) for p in pids)
    await pool.close()
    assert pool.pids == []
    assert [p for p in pids if is_alive(p)] == []
    with pytest.raises(RuntimeError, match="closed"):
        await run(pool, handlers, "pid")


async def test_size_bounds_the_number_of_children(handlers: Path) -> None:
    pool = ProcessPool(2, start_timeout_s=20)
    try:
        pids = await asyncio.gather(*(run(pool, handlers, "pid") for _ in range(6)))
        assert len(set(pids)) <= 2
        assert len(pool.pids) <= 2
    finally:
        await pool.close()


async def test_print_inside_the_handler_does_not_corrupt_the_protocol(
    pool: ProcessPool, handlers: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert await run(pool, handlers, "noisy") == {"ok": True, "stdin": "eof"}
    assert (await run(pool, handlers, "add", {"a": 1, "b": 2}))["sum"] == 3  # still in sync
    out, err = capfd.readouterr()
    # Everything the handler wrote to stdout (Python or fd 1) went to the child's stderr;
    # 100 kB is more than a pipe buffer, so a protocol pipe would have been corrupted.
    assert "~" * 100_000 in err
    assert "hello from print" in err
    assert "hello from sys.stdout" in err
    assert "hello from fd 1" in err
    assert "hello from" not in out


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="size must be >= 1"):
        ProcessPool(0)


async def test_a_child_that_died_while_idle_is_replaced_not_blamed(
    pool: ProcessPool, handlers: Path
) -> None:
    child = await run(pool, handlers, "pid")
    os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pool.pids:  # the pool has seen the exit (returncode set)
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert await run(pool, handlers, "pid") != child


async def test_a_child_logs_like_its_parent_with_the_job_and_trace_ids(
    pool: ProcessPool, handlers: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import json
    import logging

    from runtime.observe.logs import JsonFormatter

    root = logging.getLogger()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)  # the parent logs JSON lines at INFO: the child must too
    level = root.level
    root.setLevel(logging.INFO)
    try:
        await pool.run(
            str(handlers), "chatty", pack(None), job_id="chatty.7", function="chatty",
            attempt=1, timeout_s=10, params={},
            log_ids={"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"},
        )  # fmt: skip
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines()
             if line.startswith("{") and "working on it" in line]  # fmt: skip
    assert len(lines) == 1
    assert lines[0]["job_id"] == "chatty.7"
    assert lines[0]["function"] == "chatty"
    assert lines[0]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert lines[0]["span_id"] == "b7ad6b7169203331"
