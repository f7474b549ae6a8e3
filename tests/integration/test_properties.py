"""Property tests (hypothesis) of issue 13: whatever one job record, the stats counters or a
lane hold, a worker stays alive, every valid job completes, the corrupt one ends (completed
or dead-lettered with a reason), nothing is left in no place, and the operator's reads
(`runtime stats`, `peek`, the job lookup) answer.

One redis-server for the session (tests/conftest.py), FLUSHDB before each example; each
example runs its own event loop and dispatcher."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.config.registry import load_registry
from runtime.config.schema import RedisSettings, Settings
from runtime.jobs.outcome import Reason
from runtime.queue.admin import Admin
from tests.conftest import RedisServer
from tests.integration.checks import job_places
from tests.integration.conftest import FAST_WORKER, Harness

pytestmark = pytest.mark.integration

SOURCE = """
    from runtime import function

    @function(concurrency=4, timeout_s=5, max_attempts=2, backoff=(0.01, 0.01))
    async def hello(name: str) -> str:
        return f"Hello, {name}"
"""
P = b"{rt:hello}:"
REASONS = set(get_args(Reason))
JOB_FIELDS = ["env", "state", "prio", "att", "rec", "tok", "enq", "due", "start", "end",
              "notify", "hand", "exec", "res", "reason", "err", "extra"]  # fmt: skip
STATS_FIELDS = ["completed", "dead", "retried", "recovered", "stale_acks", "skipped"]

# Values a field may be corrupted to: arbitrary bytes, numbers out of range, near-misses.
values = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"", b"-1", b"1.5", b"1e3", b" 7", b"NaN", b"inf", b"0x10",
                     str(2**63 - 1).encode(), str(2**64).encode(), b"9" * 16, b"\xff\xfe"]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(lambda n: str(n).encode()),
)  # fmt: skip
field_corruption = st.tuples(st.just("field"), st.sampled_from(JOB_FIELDS), values)
type_corruption = st.tuples(
    st.just("type"), st.sampled_from(["string", "list", "set", "zset"]), st.just(b"")
)
job_corruption = st.one_of(field_corruption, type_corruption)
stats_corruption = st.one_of(
    st.none(),
    st.tuples(st.sampled_from(STATS_FIELDS), values),
    st.just(("type", b"")),  # the stats key of another type
)
stray_ids = st.lists(st.binary(min_size=1, max_size=30), max_size=3)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("props")
    (path / "handlers.py").write_text(textwrap.dedent(SOURCE))
    return path


async def until(check: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


async def corrupt_job(r: Any, key: bytes, how: tuple[str, str, bytes]) -> None:
    kind, what, value = how
    if kind == "field":
        await r.hset(key, what, value)
        return
    await r.delete(key)
    if what == "string":
        await r.set(key, b"x")
    elif what == "list":
        await r.rpush(key, b"x")
    elif what == "set":
        await r.sadd(key, b"x")
    else:
        await r.zadd(key, {b"x": 1})


async def run_example(
    url: str,
    folder: Path,
    how: tuple[str, str, bytes],
    stats: tuple[str, bytes] | None,
    strays: list[bytes],
) -> None:
    settings_ = Settings(redis=RedisSettings(url=url, timeout_s=0.5), worker=FAST_WORKER)
    h = Harness(settings_, load_registry(folder, {}))
    try:
        await h.redis.flushdb()
        good = [await h.client.enqueue("hello", n, job_id=n) for n in "ac"]
        bad = await h.client.enqueue("hello", "b", job_id="b")
        bad_key = P + b"job:" + bad.encode()
        await corrupt_job(h.redis, bad_key, how)
        if stats is not None:
            field, value = stats
            if field == "type":
                await h.redis.set(P + b"stats", value or b"x")
            else:
                await h.redis.hset(P + b"stats", field, value)
                await h.redis.hset(
                    P + b"minute:" + str(int(time.time() // 60)).encode(), field, value
                )
        for stray in strays:
            await h.redis.rpush(P + b"ready:default", stray)
        dispatcher = h.start()

        for job_id in good:
            assert await h.client.result(job_id, 10) == f"Hello, {job_id[-1]}"

        async def bad_ended() -> bool:
            if await h.redis.type(bad_key) == b"hash":
                state, reason = await h.redis.hmget(bad_key, "state", "reason")
                if state == b"completed":
                    return True
                if state == b"dead":
                    assert (reason or b"").decode() in REASONS, reason
                    return True
                return False
            for job_id in await h.redis.lrange(P + b"dlq", 0, -1):
                if await h.redis.hget(P + b"job:" + job_id, "raw_id") == bad.encode():
                    return True
            return False

        assert await until(bad_ended), await h.redis.hgetall(bad_key)
        assert await until(lambda: _empty(h))
        assert dispatcher.is_running
        assert await job_places(h.redis, "rt", "hello") == []
        # The operator's reads answer, whatever they find.
        admin = Admin(h.redis, "rt")
        await admin.stats(["hello"])
        await admin.peek("hello", is_dlq=True)
        await admin.peek("hello")
        await h.broker.stats("hello")
        record = await h.broker.job(bad)
        assert record is not None
        msgspec.json.encode(record)
    finally:
        await h.close()


async def _empty(h: Harness) -> bool:
    return sum([await h.redis.llen(P + b"ready:" + p) for p in (b"high", b"default", b"low")]) == 0


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(how=job_corruption, stats=stats_corruption, strays=stray_ids)
def test_any_corrupt_record_costs_only_itself(
    redis_server: RedisServer,
    folder: Path,
    how: tuple[str, str, bytes],
    stats: tuple[str, bytes] | None,
    strays: list[bytes],
) -> None:
    asyncio.run(run_example(redis_server.url, folder, how, stats, strays))
