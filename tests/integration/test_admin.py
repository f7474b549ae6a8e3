"""The operator commands against a real redis-server: stats, peek, purge-dlq, requeue-dlq.

Jobs are made by the real runtime (handlers in a folder → dispatcher → settle script), or,
for the deep-queue tests, written straight into Redis in the layout the scripts use. The
CLI runs in-process through ``runtime.cli.main.run`` in a worker thread (it calls asyncio.run).
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest

from runtime.cli.main import run
from runtime.function import Priority
from runtime.jobs import envelope
from runtime.jobs.settle import SendToDlq
from runtime.queue.admin import Admin
from runtime.queue.keys import FunctionKeys
from tests.integration.conftest import Harness, MakeHarness

pytestmark = pytest.mark.integration

HANDLERS = """
    import os
    from runtime import Reject, function

    @function(max_in_flight=32)
    async def hello(name: str) -> str:
        return f"Hello, {name}"

    @function(max_attempts=1)
    async def doomed(n: int) -> int:
        raise Reject(f"no thanks {n}")

    @function(max_attempts=2, backoff=(0.01, 0.02))
    async def needs_file(path: str) -> str:
        if not os.path.exists(path):
            raise ValueError(f"missing {path}")
        return "found"
"""

CliResult = tuple[int, str, str]


class Cli:
    """``runtime …`` in-process against the test Redis and the harness's folder."""

    def __init__(self, h: Harness, capsys: pytest.CaptureFixture[str], config: Path) -> None:
        self.h = h
        self.capsys = capsys
        self.common = ["--redis", h.settings.redis.url, "--functions", str(h.registry.folder)]
        self.config = config

    async def __call__(self, command: str, *args: str) -> CliResult:
        self.capsys.readouterr()
        argv = ["--config", str(self.config), command, *self.common, *args]
        try:
            code = await asyncio.to_thread(run, argv)
        except SystemExit as exc:  # argparse refused the arguments
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return code, out, err

    async def json(self, command: str, *args: str) -> Any:
        code, out, err = await self(command, *args, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "config"  # no settings.toml: the defaults (namespace "rt")
    folder.mkdir()
    return folder


async def harness_and_cli(
    make_harness: MakeHarness,
    capsys: pytest.CaptureFixture[str],
    config_dir: Path,
    *,
    start: bool = True,
) -> tuple[Harness, Cli]:
    h = await make_harness(HANDLERS, start=start)
    return h, Cli(h, capsys, config_dir)


async def dead_letter(h: Harness, count: int, first: int = 0) -> list[str]:
    """``count`` jobs of ``doomed`` run by the real runtime until dead-lettered (rejected),
    in their DLQ order (the order they ended in, which concurrency may shuffle)."""
    ids = [await h.client.enqueue("doomed", first + i) for i in range(count)]
    for job_id in ids:
        record = await h.client.wait(job_id, 5)
        assert record.state == "dead" and record.reason == "rejected"
    mine = set(ids)
    return [job_id for job_id in await dlq(h) if job_id in mine]


async def dlq(h: Harness, function: str = "doomed") -> list[str]:
    return [i.decode() for i in await h.redis.lrange(FunctionKeys("rt", function).dlq, 0, -1)]


async def snapshot(h: Harness) -> dict[bytes, Any]:
    """Every key with its type and content (tests only: KEYS on a tiny database)."""
    out: dict[bytes, Any] = {}
    for key in sorted(await h.redis.keys("*")):
        kind = (await h.redis.type(key)).decode()
        if kind == "hash":
            out[key] = await h.redis.hgetall(key)
        elif kind == "list":
            out[key] = await h.redis.lrange(key, 0, -1)
        elif kind == "zset":
            out[key] = await h.redis.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = await h.redis.get(key)
    return out


# -- stats ------------------------------------------------------------------------------


async def test_stats_figures_match_what_was_enqueued(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], config_dir: Path
) -> None:
    h, cli = await harness_and_cli(make_harness, capsys, config_dir)
    await dead_letter(h, 3)  # by the real runtime, which then stops
    await h.stop()
    lanes: list[Priority] = ["high", "high", "default", "default", "default", "low"]
    for i, lane in enumerate(lanes):
        await h.client.enqueue("hello", f"n{i}", priority=lane)
    await h.client.enqueue("hello", "later", delay_s=60)
    await h.client.enqueue("hello", "later2", delay_s=60)
    await asyncio.sleep(0.2)  # the heads of the lanes have waited at least this long
    claim = await h.broker.claim("hello", 3, lease_ms=30_000, max_in_flight=0)
    assert len(claim.jobs) == 3  # both high, then the first default: in flight now
    entry = SendToDlq(claim.jobs[0].id, claim.jobs[0].token, "rejected", "by test", True)
    assert await h.broker.settle("hello", [entry]) == [1]

    data = await cli.json("stats")
    by_name = {f["function"]: f for f in data["functions"]}
    assert set(by_name) == {"hello", "doomed", "needs_file"}  # the folder's functions
    hello = by_name["hello"]
    assert hello["ready"] == {"high": 0, "default": 2, "low": 1}
    assert (hello["delayed"], hello["in_flight"], hello["max_in_flight"]) == (2, 2, 32)
    assert (hello["dead"], hello["lease_expired"]) == (1, 0)
    assert hello["oldest_wait_s"]["high"] is None
    assert 0.2 <= hello["oldest_wait_s"]["default"] < 30
    assert 0.2 <= hello["oldest_wait_s"]["low"] < 30
    assert hello["totals"]["dead"] == 1
    doomed = by_name["doomed"]
    assert (doomed["dead"], doomed["totals"]["dead"], doomed["max_in_flight"]) == (3, 3, None)
    # Dead-lettered within the last minute: the estimate counts each of them (this minute's
    # bucket, or the previous one weighted by what is left of it in the window).
    assert 0 < doomed["per_minute"]["dead"] <= 3
    assert doomed["per_minute"]["failed"] == doomed["per_minute"]["dead"]
    assert data["instances"] == []  # no `runtime serve` beats into this Redis
    assert "runtime instances" in data["instances_note"]

    code, out, _ = await cli("stats", "--function", "hello")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["FUNCTION", "HIGH", "DEFAULT", "LOW", "DELAYED", "IN", "FLIGHT",
                                "DEAD", "OLDEST", "DONE/MIN", "FAILED/MIN"]  # fmt: skip
    assert lines[1].split()[:7] == ["hello", "0", "2", "1", "2", "2/32", "1"]
    assert out.rstrip().endswith("runtime instances: those that beat in the last 15 s:\nnone")


async def test_stats_per_minute_rate_is_a_sliding_estimate(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], config_dir: Path
) -> None:
    h, _ = await harness_and_cli(make_harness, capsys, config_dir, start=False)
    admin = Admin(h.redis, "rt")
    k = FunctionKeys("rt", "hello")
    sec, usec = await h.redis.time()
    minute = (sec * 1000 + usec // 1000) // 60_000
    await h.redis.hset(k.minute(minute - 1), mapping={"completed": 60, "dead": 6})
    await h.redis.hset(k.minute(minute), mapping={"completed": 30, "retried": 3})
    await h.redis.hset(k.minute(minute - 2), mapping={"completed": 1000})  # outside the window
    stats = await admin.stats(["hello"])
    if stats.now_ms // 60_000 != minute:
        pytest.skip("the minute turned between the writes and the read")
    weight = 1 - (stats.now_ms % 60_000) / 60_000
    rate = stats.functions[0].per_minute
    assert rate["completed"] == pytest.approx(30 + 60 * weight, abs=0.06)
    assert rate["dead"] == pytest.approx(6 * weight, abs=0.06)
    assert rate["failed"] == pytest.approx(3 + 6 * weight, abs=0.11)


async def test_stats_counts_an_expired_lease_and_unknown_functions(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], config_dir: Path
) -> None:
    h, cli = await harness_and_cli(make_harness, capsys, config_dir, start=False)
    await h.client.enqueue("hello", "x")
    await h.broker.claim("hello", 1, lease_ms=50, max_in_flight=0)
    await asyncio.sleep(0.1)  # the holder "died": nobody extends or reclaims
    code, out, _ = await cli("stats", "--function", "hello", "--function", "gone")
    assert code == 0
    assert "hello: 1 lease(s) expired, waiting for a reclaimer" in out
    assert out.splitlines()[2].startswith("gone*  ")  # * not in the functions folder
    data = await cli.json("stats", "--function", "gone")
    assert data["functions"][0]["is_registered"] is False


async def test_stats_watch_refreshes_and_stops_after_iterations(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], config_dir: Path
) -> None:
    _, cli = await harness_and_cli(make_harness, capsys, config_dir, start=False)
    code, out, _ = await cli("stats", "--watch", "--interval", "0.05", "--iterations", "3")
    assert code == 0
    assert out.count("runtime stats at ") == 3  # not a tty: one block after another
    assert "\x1b[" not in out
    code, out, _ = await cli(
        "stats", "--json", "--watch", "--interval", "0.05", "--iterations", "2"
    )
    assert [len(json.loads(line)["functions"]) for line in out.splitlines()] == [3, 3]


async def test_stats_on_a_million_dead_jobs_answers_fast(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], config_dir: Path
) -> None:
    h, cli = await harness_and_cli(make_harness, capsys, config_dir, start=False)
    k = FunctionKeys("rt", "doomed")
    chunk = [f"doomed.x{i}" for i in range(10_000)]
    pipe = h.setup.pipeline(transaction=False)  # set-up: never the retrying client
    for _ in range(100):
        pipe.rpush(k.dlq, *chunk)
    pipe.rpush(k.ready["default"], *chunk)
    await pipe.execute()
    admin = Admin(h.redis, "rt")
    started = time.perf_counter()
    stats = await admin.stats(["hello", "doomed", "needs_file"])
    elapsed = time.perf_counter() - started
    doomed = stats.functions[1]
    assert (doomed.dead, doomed.ready["default"]) == (1_000_000, 10_000)
    assert elapsed < 0.25, f"stats took {elapsed:.3f}s"
    started = time.perf_counter()
    peek = await admin.peek("doomed", is_dlq=True, count=20)
    assert (peek.total, len(peek.jobs)) == (1_000_000, 20)
    assert time.perf_counter() - started < 0.25
    code, out, _ = await cli("stats", "--function", "doomed")  # the whole command, in-process
    assert code == 0 and "1000000" in out


def test_stats_json_in_a_subprocess(redis_url: str, tmp_path: Path) -> None:
    import textwrap

    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    import redis

    client = redis.Redis.from_url(redis_url)
    client.rpush("{rt:doomed}:dlq", "doomed.a", "doomed.b")
    client.close()
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.cli.main", "--config", str(tmp_path), "stats", "--json",
         "--redis", redis_url, "--functions", str(folder)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {f["function"]: f["dead"] for f in data["functions"]} == {
        "doomed": 2,
        "hello": 0,
        "needs_file": 0,
    }


async def test_stats_with_redis_down_exits_3(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], config_dir: Path
) -> None:
    from tests.conftest import free_port

    _, cli = await harness_and_cli(make_harness, capsys, config_dir, start=False)
    cli.common[1] = f"redis://127.0.0.1:{free_port()}/0"
    code, _, err = await cli("stats")
    assert code == 3 and "Redis unreachable" in err


# -- peek -------------------------------------------------------------------------------


async def test_peek_shows_lanes_in_claim_order_decoded(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], config_dir: Path
) -> None:
    h, cli = await harness_and_cli(make_harness, capsys, config_dir, start=False)
    order = [("low", "l1"), ("default", "d1"), ("high", "h1"), ("default", "d2"), ("high", "h2")]
    ids = {}
    for lane, name in order:
        ids[name] = await h.client.enqueue("hello", name, priority=cast("Priority", lane))
    data = await cli.json("peek", "hello")
    assert data["source"] == "ready" and data["total"] == 5
    assert [(j["id"], j["lane"], j["payload"]) for j in data["jobs"]] == [
        (ids["h1"], "high", "h1"),
        (ids["h2"], "high", "h2"),
        (ids["d1"], "default", "d1"),
        (ids["d2"], "default", "d2"),
        (ids["l1"], "low", "l1"),
    ]
    assert all(j["state"] == "queued" and j["attempts"] == 0 for j in data["jobs"])
    data = await cli.json("peek", "hello", "-n", "3")
    assert [j["payload"] for j in data["jobs"]] == ["h1", "h2", "d1"]
    assert data["total"] == 5


async def test_peek_truncates_to_the_width(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], config_dir: Path
) -> None:
    h, cli = await harness_and_cli(make_harness, capsys, config_dir, start=False)
    await h.client.enqueue("hello", "short")
    await h.client.enqueue("hello", "x" * 500)
    code, out, _ = await cli("peek", "hello", "--width", "80")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split() == ["ID", "LANE", "ATT", "REC", "WAITING", "PAYLOAD"]
    assert all(len(line) <= 80 for line in lines)
    assert lines[2].endswith('"short"')
    assert lines[3].endswith("…") and '"xxxxxxxxxx' in lines[3] and len(lines[3]) == 80
    code, out, _ = await cli("peek", "hello", "--width", "200")
    assert max(len(line) for line in out.splitlines()) == 200
    data = await cli.json("peek", "hello", "--width", "40")  # JSON: never truncated
    assert data["jobs"][1]["payload"] == "x" * 500


async def test_peek_dlq_shows_the_newest_first_with_reasons(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], config_dir: Path
) -> None:
    h, cli = await harness_and_cli(make_harness, capsys, config_dir)
    ids = await dead_letter(h, 4)
    data = await cli.json("peek", "doomed", "--dlq", "-n", "3")
    assert data["source"] == "dlq" and data["total"] == 4
    assert [j["id"] for j in data["jobs"]] == ids[::-1][:3]
    newest = data["jobs"][0]
    assert (newest["state"], newest["reason"]) == ("dead", "rejected")
    assert newest["payload"] in range(4) and newest["error"] == f"no thanks {newest['payload']}"
    assert (newest["attempts"], newest["recoveries"]) == (1, 0)
    assert newest["dead_ms"] >= newest["enqueued_ms"] and 0 <= newest["age_s"] < 10
    code, out, _ = await cli("peek", "doomed", "--dlq", "--width", "120")
    assert code == 0
    assert out.splitlines()[0] == "doomed: 4 in the DLQ; showing 4, newest first"
    assert "rejected  no thanks 3" in out


async def test_peek_survives_garbage(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], config_dir: Path
) -> None:
    h, cli = await harness_and_cli(make_harness, capsys, config_dir, start=False)
    k = FunctionKeys("rt", "hello")
    await h.redis.hset(k.job("hello.bad"), mapping={"env": b"\xc1junk", "state": "queued"})
    ext = msgspec.msgpack.encode(msgspec.msgpack.Ext(5, b"raw"))
    env = envelope.encode(envelope.Envelope(1, "hello.ext", "hello", ext))
    await h.redis.hset(k.job("hello.ext"), mapping={"env": env, "state": "queued"})
    await h.setup.rpush(k.ready["default"], "hello.bad", "hello.ghost", "hello.ext")
    data = await cli.json("peek", "hello")
    errors = [j["payload_error"] for j in data["jobs"]]
    assert errors[0].startswith("undecodable envelope")
    assert errors[1] == "no job record for this id"
    assert errors[2].startswith("payload not shown as JSON")
    code, out, _ = await cli("peek", "hello", "--width", "100")
    assert code == 0 and "<no job record for this id>" in out
    code, _, err = await cli("peek", "bad}name")
    assert code == 2 and "function name 'bad}name'" in err


# -- purge-dlq --------------------------------------------------------------------------


async def test_purge_dry_run_changes_nothing(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], config_dir: Path
) -> None:
    h, cli = await harness_and_cli(make_harness, capsys, config_dir)
    await dead_letter(h, 5)
    await h.stop()
    before = await snapshot(h)
    code, out, _ = await cli("purge-dlq", "doomed", "--dry-run")
    assert code == 0
    assert out.startswith("doomed: dry run: would purge 5 dead jobs (rejected 5) of 5 DLQ entries")
    assert "first matches: doomed." in out
    report = (await cli.json("purge-dlq", "doomed", "--dry-run", "--reason", "timeout"))[0]
    assert (report["matched"], report["kept"], report["is_dry_run"]) == (0, 5, True)
    assert await snapshot(h) == before


async def test_purge_refuses_without_yes_when_no_terminal(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], config_dir: Path
) -> None:
    h, cli = await harness_and_cli(make_harness, capsys, config_dir)
    await dead_letter(h, 2)
    assert not sys.stdin.isatty()  # pytest's stdin
    code, out, err = await cli("purge-dlq", "doomed")
    assert code == 2 and out == ""
    assert "no terminal is attached; pass --yes" in err
    assert len(await dlq(h)) == 2
    code, _, _ = await cli("purge-dlq", "hello")  # even with nothing to purge
    assert code == 2


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_purge_asks_on_a_terminal(
    make_harness: MakeHarness,
    capsys: pytest.CaptureFixture[str],
    config_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h, cli = await harness_and_cli(make_harness, capsys, config_dir)
    await dead_letter(h, 3)
    monkeypatch.setattr(sys, "stdin", FakeTerminal("n\n"))
    code, _, err = await cli("purge-dlq", "doomed")
    assert code == 1
    assert "Purge up to 3 dead-lettered jobs of doomed (any reason, any age)? [y/N]" in err
    assert "aborted: nothing was purged" in err
    assert len(await dlq(h)) == 3
    monkeypatch.setattr(sys, "stdin", FakeTerminal("yes\n"))
    code, out, _ = await cli("purge-dlq", "doomed")
    assert code == 0 and out.startswith("doomed: purged 3 dead jobs (rejected 3)")
    assert await dlq(h) == []


async def test_purge_by_reason_and_age_keeps_the_rest_in_order(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], config_dir: Path
) -> None:
    h, cli = await harness_and_cli(make_harness, capsys, config_dir)
    ids = await dead_letter(h, 8)
    await h.stop()
    k = FunctionKeys("rt", "doomed")
    sec, _ = await h.redis.time()
    for job_id in ids[:4]:  # dead-lettered three hours ago
        await h.redis.hset(k.job(job_id), "end", (sec - 3 * 3600) * 1000)
    for job_id in ids[::2]:
        await h.redis.hset(k.job(job_id), "reason", "timeout")

    code, out, _ = await cli("purge-dlq", "doomed", "--older-than", "2h", "--reason", "timeout",
                             "--yes")  # fmt: skip
    assert code == 0, out
    assert out.startswith("doomed: purged 2 dead jobs (timeout 2); 6 left in the DLQ")
    assert await dlq(h) == [ids[1], ids[3], *ids[4:]]  # the survivors, in their order
    for job_id in (ids[0], ids[2]):
        assert not await h.redis.exists(k.job(job_id), k.done(job_id))

    report = (await cli.json("purge-dlq", "doomed", "--older-than", "1h30m", "--yes"))[0]
    assert (report["matched"], report["by_reason"]) == (2, {"rejected": 2})
    assert await dlq(h) == ids[4:]
    report = (await cli.json("purge-dlq", "doomed", "--reason", "rejected", "--yes"))[0]
    assert (report["matched"], report["kept"]) == (2, 2)
    assert await dlq(h) == [ids[4], ids[6]]
    stats = await h.broker.stats("doomed")
    assert stats["purged"] == 6 and stats["dead"] == 8


async def test_purge_never_deletes_a_job_that_is_not_dead(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], config_dir: Path
) -> None:
    h, cli = await harness_and_cli(make_harness, capsys, config_dir, start=False)
    await h.client.enqueue("hello", "alive")
    claim = await h.broker.claim("hello", 1, lease_ms=30_000, max_in_flight=0)
    job = claim.jobs[0]
    from runtime.jobs.settle import SendToDlq

    await h.broker.settle("hello", [SendToDlq(job.id, job.token, "rejected", "x", True)])
    k = FunctionKeys("rt", "hello")
    # Someone requeued it behind our back, leaving its DLQ entry (an old tool, a hand fix).
    await h.redis.hset(k.job(job.id), "state", "queued")
    await h.setup.rpush(k.ready["default"], job.id)

    report = (await cli.json("purge-dlq", "hello", "--reason", "rejected", "--yes"))[0]
    assert (report["matched"], report["kept"]) == (0, 1)
    report = (await cli.json("purge-dlq", "hello", "--yes"))[0]
    assert (report["matched"], report["stale"]) == (0, 1)  # the pointer goes, the job stays
    assert await dlq(h, "hello") == []
    h.start()
    assert await h.client.result(job.id, 5) == "Hello, alive"


async def test_purge_all_and_unknown_names(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], config_dir: Path
) -> None:
    h, cli = await harness_and_cli(make_harness, capsys, config_dir)
    await dead_letter(h, 3)
    missing = await h.client.enqueue("needs_file", str(h.registry.folder / "absent"))
    assert (await h.client.wait(missing, 5)).reason == "handler_error"
    code, out, _ = await cli("purge-dlq", "--all", "--yes")
    assert code == 0
    assert "doomed: purged 3 dead jobs (rejected 3)" in out
    assert "needs_file: purged 1 dead job (handler_error 1)" in out
    assert out.rstrip().endswith("purged 4 dead jobs in all")
    assert await dlq(h) == [] and await dlq(h, "needs_file") == []
    code, _, err = await cli("purge-dlq", "--all", "doomed", "--yes")
    assert code == 2 and "not allowed with argument" in err
    code, out, err = await cli("purge-dlq", "nosuch", "--yes")
    assert code == 0 and "'nosuch' is not in the functions folder" in err


async def test_purge_of_twenty_thousand_goes_in_small_batches(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], config_dir: Path
) -> None:
    h, cli = await harness_and_cli(make_harness, capsys, config_dir)  # a live runtime
    k = FunctionKeys("rt", "doomed")
    sec, _ = await h.redis.time()
    pipe = h.setup.pipeline(transaction=False)
    for i in range(20_000):
        job_id = f"doomed.bulk{i}"
        env = envelope.encode(envelope.Envelope(1, job_id, "doomed", msgspec.msgpack.encode(i)))
        pipe.hset(k.job(job_id), mapping={"env": env, "state": "dead", "prio": "default",
                  "att": 1, "rec": 0, "tok": 1, "enq": sec * 1000, "end": sec * 1000,
                  "reason": "rejected", "err": "bulk"})  # fmt: skip
        pipe.rpush(k.done(job_id), "1")
        pipe.rpush(k.dlq, job_id)
    await pipe.execute()
    info = await h.redis.info("commandstats")
    calls_before = info.get("cmdstat_evalsha", {}).get("calls", 0)

    report = (await cli.json("purge-dlq", "doomed", "--yes"))[0]
    assert (report["matched"], report["dlq_length"], report["scanned"]) == (20_000,) * 3
    assert report["calls"] == 100 and report["max_batch"] == 200
    info = await h.redis.info("commandstats")
    evalsha = info["cmdstat_evalsha"]
    assert evalsha["calls"] - calls_before >= 100
    # Each batch is a short script: Redis spends well under a few milliseconds per call.
    assert evalsha["usec_per_call"] < 3000, evalsha
    assert report["max_call_ms"] < 50
    assert await h.redis.keys("{rt:doomed}:job:*") == []  # no hash left behind
    assert await h.redis.keys("{rt:doomed}:done:*") == []  # nor a done marker
    assert await dlq(h) == []


async def test_a_replayed_purge_batch_changes_nothing_more(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], config_dir: Path
) -> None:
    h, _ = await harness_and_cli(make_harness, capsys, config_dir)
    ids = await dead_letter(h, 3)
    admin = Admin(h.redis, "rt", batch=2)
    k = FunctionKeys("rt", "doomed")
    args = [k.prefix, 2, "run", 0, 0]
    first = await admin._purge(keys=[k.dlq, k.stats, k.admin_call("same")], args=args)
    again = await admin._purge(keys=[k.dlq, k.stats, k.admin_call("same")], args=args)
    assert first == again
    assert first[:5] == [2, 2, 0, 0, [b"rejected", 2]]
    assert await dlq(h) == ids[2:]  # the replay did not take the next batch


# -- requeue-dlq ------------------------------------------------------------------------


async def test_requeue_resets_counters_and_the_job_completes(
    make_harness: MakeHarness,
    capsys: pytest.CaptureFixture[str],
    config_dir: Path,
    tmp_path: Path,
) -> None:
    h, cli = await harness_and_cli(make_harness, capsys, config_dir)
    marker = tmp_path / "needed"
    job_id = await h.client.enqueue("needs_file", str(marker))
    record = await h.client.wait(job_id, 5)
    assert (record.state, record.attempts, record.reason) == ("dead", 2, "handler_error")
    marker.write_text("here")

    code, out, _ = await cli("requeue-dlq", "needs_file", "--dry-run")
    assert code == 0 and "dry run: would requeue 1 dead job (handler_error 1)" in out
    assert (await h.client.job(job_id)).state == "dead"  # type: ignore[union-attr]

    code, out, _ = await cli("requeue-dlq", "needs_file")
    assert code == 0 and out.startswith("needs_file: requeued 1 dead job (handler_error 1)")
    assert await h.client.result(job_id, 5) == "found"
    record = await h.client.job(job_id)
    assert record is not None
    assert (record.state, record.attempts, record.recoveries) == ("completed", 0, 0)
    assert (record.reason, record.error) == (None, None)
    assert await dlq(h, "needs_file") == []
    stats = await h.broker.stats("needs_file")
    assert (stats["requeued"], stats["completed"], stats["dead"]) == (1, 1, 1)


async def test_requeue_limit_reason_and_rate(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], config_dir: Path
) -> None:
    h, cli = await harness_and_cli(make_harness, capsys, config_dir, start=False)
    k = FunctionKeys("rt", "doomed")
    sec, _ = await h.redis.time()
    ids = [f"doomed.r{i}" for i in range(30)]
    for i, job_id in enumerate(ids):
        env = envelope.encode(envelope.Envelope(1, job_id, "doomed", msgspec.msgpack.encode(i)))
        await h.redis.hset(k.job(job_id), mapping={"env": env, "state": "dead",
                           "prio": "high" if i % 3 == 0 else "default", "att": 5, "rec": 2,
                           "tok": 7, "enq": sec * 1000, "end": sec * 1000,
                           "reason": "timeout" if i < 25 else "rejected"})  # fmt: skip
        await h.setup.rpush(k.dlq, job_id)

    code, out, _ = await cli("requeue-dlq", "doomed", "--reason", "rejected", "--limit", "2")
    assert code == 0 and out.startswith("doomed: requeued 2 dead jobs (rejected 2)")
    assert await h.redis.lrange(k.ready["default"], 0, -1) == [b"doomed.r25", b"doomed.r26"]
    assert await h.redis.lrange(k.ready["high"], 0, -1) == []
    assert await dlq(h) == [*ids[:25], *ids[27:]]  # the rest, in their order
    fields = await h.redis.hmget(k.job("doomed.r26"), ["state", "att", "rec", "tok", "reason"])
    assert fields == [b"queued", b"0", b"0", b"7", None]  # the token never goes back

    started = time.monotonic()
    report = await cli.json("requeue-dlq", "doomed", "--reason", "timeout", "--rate", "40/s")
    elapsed = time.monotonic() - started
    assert report["matched"] == 25 and report["calls"] == 7  # 4 a call: a tenth of a second
    assert 0.55 <= elapsed < 2.0  # 24 jobs are due 0.6 s after the start: the last call waits
    high = await h.redis.lrange(k.ready["high"], 0, -1)
    assert [i.decode() for i in high] == [ids[i] for i in range(0, 25, 3)]
    assert await dlq(h) == ids[27:]
    h.start()  # the real runtime takes them: doomed rejects them all over again
    await asyncio.sleep(0.2)
    for _ in range(50):
        if len(await dlq(h)) == 30:
            break
        await asyncio.sleep(0.1)
    record = await h.client.job("doomed.r0")
    assert record is not None and (record.attempts, record.reason) == (1, "rejected")


async def test_bad_durations_and_rates_are_named(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], config_dir: Path
) -> None:
    _, cli = await harness_and_cli(make_harness, capsys, config_dir, start=False)
    for command, flag, value, expected in [
        ("purge-dlq", "--older-than", "2x", "invalid duration '2x': expected a duration like"),
        ("purge-dlq", "--older-than", "90", "invalid duration '90'"),
        ("requeue-dlq", "--rate", "50", "invalid rate '50': expected a rate like 50/s, 300/m"),
        ("requeue-dlq", "--rate", "0/s", "invalid rate '0/s'"),
        ("requeue-dlq", "--limit", "0", "'0' must be a whole number from 1"),
    ]:
        code, _, err = await cli(command, "doomed", flag, value)
        assert code == 2 and expected in err


async def test_admin_rejects_bad_arguments(make_harness: MakeHarness) -> None:
    h = await make_harness(HANDLERS, start=False)
    with pytest.raises(ValueError, match="batch=0"):
        Admin(h.redis, "rt", batch=0)
    admin = Admin(h.redis, "rt")
    with pytest.raises(ValueError, match="limit=0"):
        await admin.requeue_dlq("doomed", limit=0)
    with pytest.raises(ValueError, match="rate_per_s=0"):
        await admin.requeue_dlq("doomed", rate_per_s=0)
