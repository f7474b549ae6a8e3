"""Debugging a handler (issue 14): a failed attempt's traceback is stored on its job by the
settle script, replaced by each later failure's, and shown by ``runtime job``, ``runtime
peek --dlq --traceback`` and ``GET /v1/jobs/{id}`` (to token holders), against a real
redis-server and the real runtime (async, thread and process handlers)."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from runtime.cli.main import run
from runtime.config.registry import load_registry
from runtime.config.schema import HttpSettings, RedisSettings, Settings
from runtime.jobs.records import JobRecord
from runtime.server.app import build_app
from tests.integration.conftest import FAST_WORKER, Harness, MakeHarness

pytestmark = pytest.mark.integration

HANDLERS = """
    import asyncio
    from runtime import Context, function

    def parse_row(n):
        raise ValueError(f"bad row {n}")

    @function(max_attempts=2, backoff=(0.01, 0.01))
    async def broken(n: int) -> int:
        return parse_row(n)

    @function(max_attempts=2, backoff=(0.01, 0.01))
    def broken_thread(n: int) -> int:
        return parse_row(n)

    @function(executor="process", max_attempts=1)
    def broken_process(n: int) -> int:
        return parse_row(n)

    @function(max_attempts=2, backoff=(0.01, 0.01), timeout_s=0.3)
    async def fails_then_hangs(n: int, ctx: Context) -> int:
        if ctx.attempt == 1:
            parse_row(n)
        await asyncio.sleep(30)
        return n

    @function
    async def fine(n: int) -> int:
        return n + 1
"""


async def _dead(h: Harness, function: str, n: int) -> JobRecord:
    job_id = await h.client.enqueue(function, n)
    record = await h.client.wait(job_id, 20)
    assert record.state == "dead", record
    return record


@pytest.mark.parametrize("function", ["broken", "broken_thread", "broken_process"])
async def test_the_last_failure_traceback_is_stored_on_the_job(
    make_harness: MakeHarness, function: str
) -> None:
    h = await make_harness(HANDLERS)
    record = await _dead(h, function, 7)
    assert record.error == "ValueError: bad row 7"
    tb = record.traceback or ""
    lines = tb.rstrip().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: bad row 7"
    assert "in parse_row" in tb and f"in {function}" in tb
    # It starts at the handler's own frame: the runtime's call into it is left out.
    assert "runtime/execution" not in tb


async def test_a_later_failure_without_a_traceback_clears_the_older_one(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(HANDLERS)
    record = await _dead(h, "fails_then_hangs", 3)
    assert (record.reason, record.error) == ("timeout", "attempt timed out")
    assert record.traceback is None  # not attempt 1's ValueError, which err no longer names


async def test_a_job_dead_of_worker_crashes_keeps_no_older_traceback(
    make_harness: MakeHarness,
) -> None:
    """Attempt 1 failed with a traceback (kept as 'tb'); then every worker holding the job
    died until it was dead-lettered worker_crashed: its error is the crash, so the old
    traceback, which no longer matches 'err', must go."""
    h = await make_harness(HANDLERS, start=False)
    job_id = await h.client.enqueue("broken", 5)
    jk = h.broker.keys("broken").job(job_id)
    await h.redis.hset(jk, mapping={"tb": "Traceback ...\nValueError: bad row 5", "rec": 2})
    claim = await h.broker.claim("broken", 1, lease_ms=50, max_in_flight=0)
    assert [job.id for job in claim.jobs] == [job_id]
    assert await h.broker.mark_executing("broken", job_id, claim.jobs[0].token)  # alone
    await asyncio.sleep(0.1)  # ... the process dies; the lease expires
    assert await h.broker.reclaim("broken", max_recoveries=2) == (0, 1)
    record = await h.client.job(job_id)
    assert record is not None and (record.state, record.reason) == ("dead", "worker_crashed")
    assert record.traceback is None


class _Cli:
    def __init__(self, h: Harness, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        self.capsys = capsys
        self.config = tmp_path / "config"
        self.config.mkdir(exist_ok=True)
        self.redis = ["--redis", h.settings.redis.url]
        self.folder = ["--functions", str(h.registry.folder)]

    async def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = await asyncio.to_thread(run, ["--config", str(self.config), *argv, *self.redis])
        out, err = self.capsys.readouterr()
        return code, out, err


async def test_runtime_job_shows_the_error_and_the_traceback(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    h = await make_harness(HANDLERS)
    cli = _Cli(h, capsys, tmp_path)
    dead = await _dead(h, "broken", 5)
    code, out, err = await cli("job", dead.id)
    assert (code, err) == (1, "")  # dead-lettered: status 1
    assert f"job       {dead.id}\n" in out
    assert "state     dead (handler_error)\n" in out
    assert "attempts  2 failed, 0 recovered\n" in out
    assert "error     ValueError: bad row 5\n" in out
    assert "\ntraceback\n  Traceback (most recent call last):\n" in out
    assert out.rstrip().endswith("  ValueError: bad row 5")

    code, out, err = await cli("job", dead.id, "--json")
    data = json.loads(out)
    assert code == 1
    assert data["error"] == {"code": "handler_error", "message": "ValueError: bad row 5"}
    assert data["traceback"] == dead.traceback
    assert data["enqueued_at"].endswith("Z") and data["finished_at"].endswith("Z")

    done = await h.client.enqueue("fine", 1)
    code, out, err = await cli("job", done, "--wait", "10")
    assert (code, err) == (0, "")
    assert "state     completed\n" in out and "result    2\n" in out


async def test_runtime_job_waits_and_says_when_the_job_is_unknown(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    h = await make_harness(HANDLERS, start=False)
    cli = _Cli(h, capsys, tmp_path)
    queued = await h.client.enqueue("fine", 1)
    code, out, err = await cli("job", queued, "--wait", "0.2")
    assert code == 1 and "state     queued\n" in out
    assert err == f"error: job {queued} is still queued after 0.2s; it continues\n"
    code, out, err = await cli("job", "fine.nope")
    assert (code, out) == (2, "")
    assert err.startswith("error: no job 'fine.nope' in namespace 'rt': it was never enqueued")


async def test_peek_dlq_traceback_shows_each_jobs_traceback(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    h = await make_harness(HANDLERS)
    cli = _Cli(h, capsys, tmp_path)
    first, second = [await _dead(h, "broken", n) for n in (1, 2)]
    peek = ("peek", "broken", *cli.folder, "--dlq")
    code, out, err = await cli(*peek, "--traceback", "--width", "200")
    assert (code, err) == (0, "")
    for record, n in ((first, 1), (second, 2)):
        assert f"traceback of {record.id} (handler_error):\n  Traceback" in out
        assert f"  ValueError: bad row {n}" in out
    code, out, _ = await cli(*peek, "--json", "--traceback")
    jobs = json.loads(out)["jobs"]
    assert {j["id"]: j["traceback"] for j in jobs} == {
        first.id: first.traceback,
        second.id: second.traceback,
    }
    code, out, _ = await cli(
        "peek", "broken", *cli.folder, "--dlq", "--json"
    )  # not asked: not fetched
    assert [j["traceback"] for j in json.loads(out)["jobs"]] == [None, None]


async def test_get_job_shows_the_traceback_to_token_holders(
    make_harness: MakeHarness, tmp_path: Path, redis_url: str
) -> None:
    h = await make_harness(HANDLERS)
    dead = await _dead(h, "broken", 9)
    folder = tmp_path / "http-functions"
    folder.mkdir()
    (folder / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    settings = Settings(
        redis=RedisSettings(url=redis_url, timeout_s=0.5),
        http=HttpSettings(token="tb-token-1"),
        worker=FAST_WORKER,
    )
    client = TestClient(TestServer(build_app(settings, load_registry(folder, {}))))
    await client.start_server()
    try:
        response = await client.get(f"/v1/jobs/{dead.id}")
        assert response.status == 401  # no token, no traceback
        auth = {"Authorization": "Bearer tb-token-1"}
        body = await (await client.get(f"/v1/jobs/{dead.id}", headers=auth)).json()
        assert body["error"]["message"] == "ValueError: bad row 9"
        assert body["traceback"] == dead.traceback
    finally:
        await client.close()
