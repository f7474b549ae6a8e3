"""Job control over HTTP on the real app against a real redis-server: the run history
(paging, filters), DELETE /v1/jobs/{id}, progress and the job's server-sent events."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from runtime.config.registry import load_registry
from runtime.config.schema import HttpSettings, RedisSettings, Settings
from runtime.server.app import build_app
from runtime.server.appkeys import BROKER_KEY
from tests.integration.conftest import FAST_WORKER

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TOKEN = "control-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HANDLERS = """
    import asyncio
    from runtime import Context, Reject, function

    @function(concurrency=4, max_attempts=1)
    async def job(x: int) -> int:
        if x < 0:
            raise Reject("negative input")
        if x == 0:
            raise ValueError("zero is not allowed")
        return x

    @function(timeout_s=30)
    async def slow(seconds: float, ctx: Context) -> float:
        await asyncio.sleep(seconds)
        return seconds

    @function(timeout_s=30)
    async def steps(n: int, ctx: Context) -> int:
        for i in range(1, n + 1):
            await asyncio.sleep(0.3)
            ctx.progress(i / n, f"step {i} of {n}")
        await asyncio.sleep(0.6)  # the last report is written before the job ends
        return n
"""
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(tmp_path: Path, redis_url: str) -> AsyncIterator[Client]:
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    settings = Settings(
        redis=RedisSettings(url=redis_url, timeout_s=0.5, connect_timeout_s=0.5),
        http=HttpSettings(token=TOKEN),
        worker=FAST_WORKER,
    )
    c = TestClient(TestServer(build_app(settings, load_registry(folder, {}))))
    await c.start_server()
    yield c
    await c.close()


async def _enqueue(client: Client, function: str, payload: Any, **params: Any) -> str:
    r = await client.post(f"/v1/functions/{function}/jobs", json=payload, headers=AUTH,
                          params=params)  # fmt: skip
    assert r.status == 202, await r.text()
    job_id: str = (await r.json())["job_id"]
    return job_id


async def _job(client: Client, job_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/jobs/{job_id}", headers=AUTH)
    assert r.status == 200
    body: dict[str, Any] = await r.json()
    return body


async def _until(client: Client, job_id: str, *states: str) -> dict[str, Any]:
    for _ in range(500):
        body = await _job(client, job_id)
        if body["state"] in states:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"{job_id} never {states}: {body}")


async def _pages(client: Client, **params: Any) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = await client.get("/v1/jobs", headers=AUTH, params=query)
        assert r.status == 200, await r.text()
        body = await r.json()
        pages.append(body["jobs"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_history_lists_finished_runs_newest_first_in_pages(client: Client) -> None:
    ok = [await _enqueue(client, "job", i) for i in range(1, 8)]
    bad = [await _enqueue(client, "job", -1), await _enqueue(client, "job", 0)]
    cancelled = await _enqueue(client, "job", 5, delay_s=60)
    assert (await client.delete(f"/v1/jobs/{cancelled}", headers=AUTH)).status == 200
    for job_id in ok + bad:
        await _until(client, job_id, "completed", "dead")
    pages = await _pages(client, function="job", limit=3)
    runs = [run for page in pages for run in page]
    assert sorted(r["id"] for r in runs) == sorted([*ok, *bad, cancelled])
    assert all(len(page) <= 3 for page in pages) and len(pages) >= 4
    finished = [r["finished_at"] for r in runs]
    assert finished == sorted(finished, reverse=True)
    by_id = {r["id"]: r for r in runs}
    assert by_id[bad[0]]["state"] == "dead" and by_id[bad[0]]["reason"] == "rejected"
    assert by_id[bad[1]]["reason"] == "handler_error"
    assert by_id[cancelled]["state"] == "cancelled" and by_id[cancelled]["started_at"] is None
    assert by_id[ok[0]]["attempts"] == 0 and by_id[ok[0]]["duration_ms"] >= 0

    dead = [r for page in await _pages(client, function="job", state="dead") for r in page]
    assert sorted(r["id"] for r in dead) == sorted(bad)
    rejected = await _pages(client, function="job", reason="rejected", limit=1)
    assert [r["id"] for page in rejected for r in page] == [bad[0]]
    assert await _pages(client, function="job", since="1h", state="cancelled") == [
        [by_id[cancelled]]
    ]
    assert await _pages(client, function="job", until="86400") == [[]]  # 1970


async def test_history_refuses_bad_queries(client: Client) -> None:
    async def status(**params: Any) -> tuple[int, str]:
        r = await client.get("/v1/jobs", headers=AUTH, params=params)
        return r.status, (await r.json())["error"]["code"]

    assert await status() == (400, "bad_parameter")  # ?function= is required
    assert await status(function="nope") == (404, "unknown_function")
    assert await status(function="job", state="running") == (400, "bad_parameter")
    assert await status(function="job", since="yesterday") == (400, "bad_parameter")
    assert await status(function="job", cursor="x") == (400, "bad_parameter")
    assert await status(function="job", limit="501") == (400, "bad_parameter")
    assert await status(function="job", color="red") == (400, "bad_parameter")
    assert (await client.get("/v1/jobs", params={"function": "job"})).status == 401


async def test_delete_cancels_a_delayed_and_a_running_job(client: Client) -> None:
    delayed = await _enqueue(client, "slow", 0.0, delay_s=60)
    r = await client.delete(f"/v1/jobs/{delayed}", headers=AUTH)
    assert r.status == 200
    assert await r.json() == {"job_id": delayed, "outcome": "cancelled", "state": "cancelled",
                              "was": "delayed"}  # fmt: skip
    r = await client.delete(f"/v1/jobs/{delayed}", headers=AUTH)
    assert (r.status, (await r.json())["error"]["code"]) == (409, "job_finished")

    running = await _enqueue(client, "slow", 20.0)
    await _until(client, running, "running")
    r = await client.delete(f"/v1/jobs/{running}", headers=AUTH)
    assert (r.status, (await r.json())["outcome"]) == (202, "requested")
    body = await _until(client, running, "cancelled")
    assert body["error"]["code"] == "cancelled" and "cancel_requested_at" in body

    assert (await client.delete("/v1/jobs/slow.nope", headers=AUTH)).status == 404
    assert (await client.delete("/v1/jobs/nodot", headers=AUTH)).status == 404
    assert (await client.delete(f"/v1/jobs/{running}")).status == 401


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


async def test_progress_is_stored_and_streamed_then_the_end(client: Client) -> None:
    job_id = await _enqueue(client, "steps", 4)
    assert (await client.get(f"/v1/jobs/{job_id}/events")).status == 401
    r = await client.get(f"/v1/jobs/{job_id}/events", headers=AUTH, params={"timeout_s": 20})
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    events = _events(await r.text())
    names = [name for name, _ in events]
    assert names[-1] == "end" and events[-1][1]["state"] == "completed"
    assert ("state", {"id": job_id, "state": "running"}) in events
    fractions = [data["fraction"] for name, data in events if name == "progress"]
    assert len(fractions) >= 2 and fractions == sorted(fractions) and fractions[-1] == 1.0
    body = await _job(client, job_id)
    assert body["progress"]["fraction"] == 1.0 and body["progress"]["message"] == "step 4 of 4"


async def test_event_stream_ends_at_its_timeout(client: Client) -> None:
    job_id = await _enqueue(client, "slow", 20.0)
    r = await client.get(f"/v1/jobs/{job_id}/events", headers=AUTH, params={"timeout_s": 0.5})
    events = _events(await r.text())
    assert events[-1][0] == "timeout"
    assert (await client.get("/v1/jobs/slow.nope/events", headers=AUTH)).status == 404
    await client.delete(f"/v1/jobs/{job_id}", headers=AUTH)


async def test_an_invoke_whose_job_is_cancelled_answers_409(client: Client) -> None:
    invoke = asyncio.ensure_future(
        client.post("/v1/functions/slow/invoke", json=20.0, headers=AUTH, params={"timeout_s": 15})
    )
    for _ in range(500):
        running = await client.app[BROKER_KEY].redis.zrange("{rt:slow}:leased", 0, -1)
        if running:
            break
        await asyncio.sleep(0.02)
    (job_id,) = [i.decode() for i in running]
    assert (await client.delete(f"/v1/jobs/{job_id}", headers=AUTH)).status == 202
    r = await invoke
    assert r.status == 409 and (await r.json())["error"]["code"] == "cancelled"
