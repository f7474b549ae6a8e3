"""Cancelling jobs against a real redis-server: queued and delayed jobs are taken out at
once; running ones are stopped on every executor and end ``cancelled``; the request lives
in the job's record, so it holds across a worker's restart and a partitioned worker's late
settle never completes the job."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import textwrap
import time
from pathlib import Path

import pytest

from runtime.client import Client
from runtime.jobs.settle import Complete
from tests.integration.conftest import MakeHarness
from tests.integration.serving import ServeProcesses, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

HANDLERS = """
    import asyncio, os, time
    from runtime import Context, function

    @function(concurrency=4)
    async def quick(x: int) -> int:
        return x

    @function(concurrency=2, timeout_s=60)
    async def sleeper(seconds: float, ctx: Context) -> str:
        await asyncio.sleep(seconds)
        return "done"

    @function(executor="thread", concurrency=2, timeout_s=60)
    def looper(path: str, ctx: Context) -> str:
        while not ctx.cancelled.wait(0.02):
            pass
        with open(path, "w") as f:
            f.write("saw the flag")
        return "stopped early"

    @function(executor="process", concurrency=1, timeout_s=60)
    def child(path: str) -> str:
        with open(path, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)
        return "never"
"""


async def _until_state(client: Client, job_id: str, state: str, timeout_s: float = 10) -> None:
    for _ in range(int(timeout_s / 0.02)):
        record = await client.job(job_id)
        if record is not None and record.state == state:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{job_id} never {state}: {await client.job(job_id)}")


async def test_a_queued_job_is_removed_and_never_runs(make_harness: MakeHarness) -> None:
    h = await make_harness(HANDLERS, start=False)
    job_id = await h.client.enqueue("quick", 1)
    after = await h.client.enqueue("quick", 2)
    waiter = asyncio.ensure_future(h.client.wait(job_id, 10))
    await asyncio.sleep(0)  # the waiter asks for a notification before the cancel
    reply = await h.client.cancel(job_id)
    assert (reply.outcome, reply.state) == ("cancelled", "queued")
    record = await waiter  # waiters are woken by the cancel
    assert (record.state, record.reason) == ("cancelled", "cancelled")
    assert await h.redis.lrange("{rt:quick}:ready:default", 0, -1) == [after.encode()]
    h.start()
    assert await h.client.result(after, 10) == 2  # FIFO: the cancelled one went first
    stored = await h.client.job(job_id)
    assert stored is not None and stored.state == "cancelled" and stored.started_ms is None
    stats = await h.broker.stats("quick")
    assert (stats["completed"], stats["cancelled"]) == (1, 1)
    again = await h.client.cancel(job_id)
    assert (again.outcome, again.state) == ("finished", "cancelled")


async def test_a_delayed_job_is_removed(make_harness: MakeHarness) -> None:
    h = await make_harness(HANDLERS, start=False)
    job_id = await h.client.enqueue("quick", 1, delay_s=0.2)
    reply = await h.client.cancel(job_id)
    assert (reply.outcome, reply.state) == ("cancelled", "delayed")
    assert await h.redis.zcard("{rt:quick}:delayed") == 0
    h.start()
    later = await h.client.enqueue("quick", 2, delay_s=0.3)
    assert await h.client.result(later, 10) == 2
    record = await h.client.job(job_id)
    assert record is not None and record.state == "cancelled"


async def test_unknown_and_finished_jobs(make_harness: MakeHarness) -> None:
    h = await make_harness(HANDLERS)
    assert (await h.client.cancel("quick.nope")).outcome == "missing"
    done = await h.client.enqueue("quick", 3)
    await h.client.result(done, 10)
    assert (await h.client.cancel(done)).state == "completed"


async def test_a_running_async_job_is_cancelled(make_harness: MakeHarness) -> None:
    h = await make_harness(HANDLERS)
    job_id = await h.client.enqueue("sleeper", 30.0)
    await _until_state(h.client, job_id, "running")
    waiter = asyncio.ensure_future(h.client.wait(job_id, 10))
    reply = await h.client.cancel(job_id)
    assert (reply.outcome, reply.state) == ("requested", "running")
    record = await waiter
    assert (record.state, record.reason) == ("cancelled", "cancelled")
    assert await h.redis.zcard("{rt:sleeper}:leased") == 0
    # its slot is free again: the next job runs
    assert await h.client.result(await h.client.enqueue("sleeper", 0.0), 10) == "done"


async def test_a_running_thread_job_sees_ctx_cancelled(
    make_harness: MakeHarness, tmp_path: Path
) -> None:
    h = await make_harness(HANDLERS)
    flag = tmp_path / "flag"
    job_id = await h.client.enqueue("looper", str(flag))
    await _until_state(h.client, job_id, "running")
    await h.client.cancel(job_id)
    record = await h.client.wait(job_id, 10)
    assert record.state == "cancelled"  # not "completed", though the handler returned
    for _ in range(1000):  # the file exists from open() on: wait for what is written in it
        if flag.exists() and flag.read_text() == "saw the flag":
            break
        await asyncio.sleep(0.02)
    assert flag.read_text() == "saw the flag"


async def test_a_running_process_job_has_its_child_killed(
    make_harness: MakeHarness, tmp_path: Path
) -> None:
    h = await make_harness(HANDLERS)
    pid_file = tmp_path / "pid"
    job_id = await h.client.enqueue("child", str(pid_file))
    await _until_state(h.client, job_id, "running")
    for _ in range(500):
        if pid_file.exists() and pid_file.read_text():
            break
        await asyncio.sleep(0.02)
    pid = int(pid_file.read_text())
    await h.client.cancel(job_id)
    record = await h.client.wait(job_id, 10)
    assert record.state == "cancelled"
    for _ in range(250):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(f"the child {pid} still runs")


async def test_a_partitioned_holder_never_completes_a_cancelled_job(
    make_harness: MakeHarness,
) -> None:
    """The holder is cut off (no heartbeat, no settle) while the job is cancelled; when it
    comes back its completion is refused, before and after the lease is reclaimed."""
    h = await make_harness(HANDLERS, start=False)
    job_id = await h.client.enqueue("quick", 1)
    claim = await h.broker.claim("quick", 1, lease_ms=60_000, max_in_flight=0)
    (job,) = claim.jobs
    assert (await h.client.cancel(job_id)).outcome == "requested"
    # back before its lease expired: settle ends the job cancelled, not completed
    assert await h.broker.settle("quick", [Complete(job.id, job.token, b"1")]) == [1]
    record = await h.client.job(job_id)
    assert record is not None and (record.state, record.result) == ("cancelled", None)

    other = await h.client.enqueue("quick", 2)
    claim = await h.broker.claim("quick", 1, lease_ms=300, max_in_flight=0)
    (job,) = claim.jobs
    assert (await h.client.cancel(other)).outcome == "requested"
    h.start()  # its reclaimer takes the expired lease: cancelled, never requeued
    await _until_state(h.client, other, "cancelled")
    assert await h.broker.settle("quick", [Complete(job.id, job.token, b"2")]) == [0]
    record = await h.client.job(other)
    assert record is not None and record.state == "cancelled" and record.recoveries == 0
    stats = await h.broker.stats("quick")
    assert (stats.get("completed", 0), stats["cancelled"], stats["stale_acks"]) == (0, 2, 1)


async def test_a_cancel_survives_a_stopped_worker_process(tmp_path: Path, redis_url: str) -> None:
    """A real `runtime serve` SIGSTOPped while it runs the job (partitioned: no heartbeat):
    the cancel is kept in the record, another runtime's reclaimer ends the job cancelled,
    and the stopped one, continued, finishes its handler but never completes the job."""
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    serve = ServeProcesses(tmp_path, redis_url, {"RUNTIME_LOG__LEVEL": "WARNING"})
    try:
        async with Client(redis_url) as client:
            job_id = await client.enqueue("sleeper", 3.0)
            first = serve.spawn("--functions", str(folder))
            await _until_state(client, job_id, "running", 20)
            first.send_signal(signal.SIGSTOP)
            assert (await client.cancel(job_id)).outcome == "requested"
            serve.spawn("--functions", str(folder))  # the restart: its reclaimer takes over
            record = await client.wait(job_id, 20)
            assert record.state == "cancelled", serve.logs()
            first.send_signal(signal.SIGCONT)
            # the continued runtime learns its lease is gone (heartbeat) or has its settle
            # refused (its handler's 3 s were over first): either way nothing completes
            await wait_until(
                lambda: "lost (reclaimed)" in serve.logs() or b"stale_acks" in _stats(redis_url),
                20,
                serve.logs,
            )
            record2 = await client.job(job_id)
            assert record2 is not None and record2.state == "cancelled"
            assert record2.finished_ms == record.finished_ms
    finally:
        serve.stop_all()


def _stats(redis_url: str) -> bytes:
    import redis

    with redis.Redis.from_url(redis_url) as r:
        return b" ".join(r.hkeys("{rt:sleeper}:stats"))


async def test_the_cli_cancels_and_lists_the_history(
    make_harness: MakeHarness, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime.cli.main import run

    h = await make_harness(HANDLERS, start=False)
    job_id = await h.client.enqueue("quick", 1, delay_s=60)
    assert await asyncio.to_thread(run, ["cancel", job_id, "--redis", redis_url]) == 0
    assert "cancelled (it was delayed" in capsys.readouterr().out
    assert await asyncio.to_thread(run, ["cancel", job_id, "--redis", redis_url]) == 1
    assert await asyncio.to_thread(run, ["cancel", "quick.nope", "--redis", redis_url]) == 2
    capsys.readouterr()
    argv = ["jobs", "--function", "quick", "--since", "1h", "--redis", redis_url]
    assert await asyncio.to_thread(run, [*argv, "--json"]) == 0
    page = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["state"]) for r in page["jobs"]] == [(job_id, "cancelled")]
    assert page["next_cursor"] is None
    assert await asyncio.to_thread(run, [*argv, "--state", "dead"]) == 0
    assert capsys.readouterr().out.strip() == "no finished runs match"


async def test_a_cancel_does_not_wait_for_the_next_heartbeat(make_harness: MakeHarness) -> None:
    """cancel.lua's hint on the wake channel makes the holder heartbeat at once."""
    h = await make_harness(HANDLERS, heartbeat_s=10.0, lease_s=30.0)
    job_id = await h.client.enqueue("sleeper", 30.0)
    await _until_state(h.client, job_id, "running")
    started = time.monotonic()
    await h.client.cancel(job_id)
    record = await h.client.wait(job_id, 8)
    assert record.state == "cancelled"
    assert time.monotonic() - started < 3.0  # not the 10 s heartbeat
