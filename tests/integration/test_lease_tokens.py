"""A worker's leases are (job id, token) pairs: a reply about an old token never touches a
newer run of the same job. Found in Redis outages: a heartbeat reply carrying an old token
arrived after the worker had claimed the job again, and cancelled the new run without
releasing it; the job ran a third time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from tests.integration.conftest import Harness, MakeHarness

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SOURCE = """
    import asyncio
    from runtime import function

    RUNS: list[int] = []
    PROCEED = asyncio.Event()

    @function(concurrency=2, timeout_s=60, max_recoveries=5)
    async def long(x: int) -> int:
        RUNS.append(len(RUNS) + 1)
        run = len(RUNS)
        if run == 1:
            await asyncio.sleep(60)  # its lease expires under it
        await PROCEED.wait()
        return run
"""


async def until(predicate: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


async def field(h: Harness, job_id: str, name: str) -> str | None:
    value = await h.redis.hget(f"{{rt:long}}:job:{job_id}", name)
    return value.decode() if isinstance(value, bytes) else value


async def test_a_late_heartbeat_reply_about_an_old_token_leaves_the_new_run_alone(
    make_harness: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await make_harness(SOURCE, start=False)
    handler_globals = h.registry.get("long").handler.__globals__
    runs: list[int] = handler_globals["RUNS"]

    # Hold one heartbeat call (with the leases it was given) until the job is claimed again.
    gate = asyncio.Event()
    gate.set()
    held_call: list[Sequence[tuple[str, str]]] = []
    replies: list[tuple[list[str], list[Any]]] = []
    real = h.broker.heartbeat

    async def heartbeat(function: str, held: Sequence[tuple[str, str]], **kw: Any) -> Any:
        if not gate.is_set() and held and not held_call:
            held_call.append(list(held))
            await gate.wait()
        reply = await real(function, held, **kw)
        if held_call:
            replies.append(reply)
        return reply

    monkeypatch.setattr(h.broker, "heartbeat", heartbeat)
    dispatcher = h.start()
    worker = dispatcher.workers["long"]

    job_id = await h.client.enqueue("long", 1)
    await until(lambda: _true(runs == [1]), 10, "the first run")
    first_token = await field(h, job_id, "tok")
    assert first_token is not None

    gate.clear()  # the next heartbeat (renewing the first lease) is held back
    await until(lambda: _true(bool(held_call)), 10, "a heartbeat to hold")
    assert held_call[0] == [(job_id, first_token)]

    # Unrenewed, the lease expires; the reclaimer requeues the job and the worker (one slot
    # still free) claims it again with a newer token: a second run.
    second_token = str(int(first_token) + 1)
    await until(
        lambda: _both(field(h, job_id, "tok"), second_token, runs == [1, 2]),
        15,
        "the job claimed again",
    )

    gate.set()  # the held call runs now, with the old token: Redis answers "lost"
    await until(lambda: _true(len(replies) >= 2), 10, "the late reply, then another")
    assert job_id in replies[0][0]  # the late reply did call the old lease lost
    assert await field(h, job_id, "state") == "running"
    assert job_id not in replies[-1][0]  # and the new lease is still renewed

    handler_globals["PROCEED"].set()
    record = await h.client.wait(job_id, 15)
    assert (record.state, record.recoveries) == ("completed", 1)
    assert await h.client.result(job_id, 1) == 2  # the second run's result
    assert runs == [1, 2]  # never a third run
    assert await field(h, job_id, "tok") == second_token
    assert worker.counters.leases_lost == 1  # the first run, superseded
    assert worker.counters.stale_acks == 0


async def _true(value: bool) -> bool:
    return value


async def _both(token: Awaitable[str | None], expected: str, also: bool) -> bool:
    return (await token) == expected and also
