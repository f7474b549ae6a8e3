"""The autoscaling contract on the real app against a real redis-server: the backlog split
(schedulable against held back by a rate limit, a fleet cap, an open breaker) in /metrics,
the oldest ready age on Redis's clock, and ``GET /v1/scale`` with its replica count."""

from __future__ import annotations

import asyncio
import math
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from runtime.config.registry import load_registry
from runtime.config.schema import HttpSettings, MetricsSettings, RedisSettings, Settings
from runtime.queue.backlog import BacklogReader
from runtime.server.app import build_app
from tests.integration.conftest import FAST_WORKER, MakeHarness

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TOKEN = "scale-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HANDLERS = """
    import asyncio
    from runtime import Breaker, function

    @function(concurrency=2, timeout_s=30)
    async def busy(x: int) -> None:
        await asyncio.sleep(30)

    @function(concurrency=4, rate_limit="1/h", timeout_s=30)
    async def limited(x: int) -> None:
        await asyncio.sleep(30)

    @function(concurrency=4, max_in_flight=1, timeout_s=30)
    async def capped(x: int) -> None:
        await asyncio.sleep(30)

    @function(max_attempts=1, breaker=Breaker(failure_ratio=1.0, min_samples=1, cooldown_s=600))
    async def broken(x: int) -> None:
        raise RuntimeError("the dependency is down")
"""

Client = TestClient[web.Request, web.Application]
Make = Callable[..., Awaitable[Client]]


@pytest.fixture
async def make_client(tmp_path: Path, redis_url: str) -> AsyncIterator[Make]:
    clients: list[Client] = []

    async def make(**sections: Any) -> Client:
        folder = tmp_path / f"functions{len(clients)}"
        folder.mkdir()
        (folder / "handlers.py").write_text(textwrap.dedent(HANDLERS))
        settings = Settings(
            redis=RedisSettings(url=redis_url, timeout_s=0.5, connect_timeout_s=0.5),
            http=HttpSettings(token=TOKEN),
            # the sleeping handlers are released at once when the test ends
            worker=msgspec.structs.replace(FAST_WORKER, shutdown_grace_s=0.1),
            metrics=MetricsSettings(refresh_s=0.2),
            **sections,
        )
        client = TestClient(TestServer(build_app(settings, load_registry(folder, {}))))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def _enqueue(client: Client, function: str, n: int) -> None:
    for i in range(n):
        response = await client.post(f"/v1/functions/{function}/jobs", json=i, headers=AUTH)
        assert response.status == 202, await response.text()


async def _metrics_until(
    client: Client, wanted: dict[tuple[str, tuple[tuple[str, str], ...]], float]
) -> Samples:
    """/metrics once every wanted sample has its value (the refresher runs every 0.2 s)."""
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        samples = _samples(await (await client.get("/metrics")).text())
        if all(samples.get(key) == value for key, value in wanted.items()):
            return samples
        if asyncio.get_running_loop().time() > deadline:
            seen = {key: samples.get(key) for key in wanted}
            raise AssertionError(f"metrics never reached {wanted}; last seen {seen}")
        await asyncio.sleep(0.05)


def _fn(name: str, **labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"function": name, **labels}.items()))


def _held(name: str, reason: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("queue_held_backlog", _fn(name, reason=reason))


async def test_the_backlog_splits_into_schedulable_and_held_back_by_each_limit(
    make_client: Make, redis_url: str
) -> None:
    client = await make_client()
    plain = aioredis.Redis.from_url(redis_url)
    try:
        # broken: one failure opens its breaker (reported to Redis); then jobs wait
        await _enqueue(client, "broken", 1)
        deadline = asyncio.get_running_loop().time() + 15
        while b"open" not in b"".join((await plain.hgetall("{rt:broken}:breaker")).values()):
            assert asyncio.get_running_loop().time() < deadline, "the breaker never opened"
            await asyncio.sleep(0.05)
        await _enqueue(client, "broken", 3)
        await _enqueue(client, "busy", 5)  # 2 run (concurrency 2), 3 could start elsewhere
        await _enqueue(client, "limited", 5)  # 1 starts (burst 1 of 1/h), 4 wait for the rate
        await _enqueue(client, "capped", 4)  # 1 runs (max_in_flight 1), 3 wait for the cap
        samples = await _metrics_until(
            client,
            {
                ("queue_schedulable_backlog", _fn("busy")): 3,
                ("queue_in_flight_leases", _fn("busy")): 2,
                ("worker_slots", _fn("busy")): 2,
                ("queue_schedulable_backlog", _fn("limited")): 0,
                _held("limited", "rate_limit"): 4,
                ("queue_in_flight_leases", _fn("limited")): 1,
                ("queue_schedulable_backlog", _fn("capped")): 0,
                _held("capped", "max_in_flight"): 3,
                ("queue_in_flight_leases", _fn("capped")): 1,
                ("queue_schedulable_backlog", _fn("broken")): 0,
                _held("broken", "breaker"): 3,
            },
        )
        for name in ("busy", "limited", "capped", "broken"):
            held = {r: samples[_held(name, r)] for r in ("breaker", "max_in_flight", "rate_limit")}
            assert sum(1 for n in held.values() if n) <= 1, (name, held)  # one limit each here
        assert samples[("worker_slots", _fn("limited"))] == 4
    finally:
        await plain.aclose()


async def test_the_oldest_ready_age_grows_on_redis_clock(
    make_harness: MakeHarness, redis_url: str
) -> None:
    harness = await make_harness(HANDLERS, start=False)  # no worker: the jobs stay ready
    await harness.client.enqueue("busy", 1)
    await harness.client.enqueue("busy", 2)
    options = harness.registry.get("busy").options
    reader = BacklogReader(harness.redis, "rt")
    first = await reader.read("busy", options)
    assert first is not None and first.ready == 2 and first.schedulable == 2
    (head,) = await harness.setup.lrange("{rt:busy}:ready:default", 0, 0)
    enq = int(await harness.setup.hget(b"{rt:busy}:job:" + head, "enq"))
    assert first.oldest_ready_ms == enq  # the first job's enqueue time, in Redis ms
    assert first.oldest_ready_age_s == (first.now_ms - enq) / 1000
    await _redis_time_passes(harness.setup, 1.2)
    second = await reader.read("busy", options)
    assert second is not None
    grown = second.oldest_ready_age_s - first.oldest_ready_age_s
    assert grown == pytest.approx((second.now_ms - first.now_ms) / 1000)
    assert grown >= 1.0


async def _redis_time_passes(redis: aioredis.Redis, seconds: float) -> None:
    start_s, start_us = await redis.time()
    while True:
        now_s, now_us = await redis.time()
        if (now_s - start_s) + (now_us - start_us) / 1e6 >= seconds:
            return
        await asyncio.sleep(0.05)


async def test_due_delayed_jobs_count_as_ready_and_their_due_time_as_their_age(
    make_harness: MakeHarness, redis_url: str
) -> None:
    """With no worker alive nothing promotes a due job: it must still ask for replicas."""
    harness = await make_harness(HANDLERS, start=False)
    await harness.client.enqueue("busy", 1, delay_s=0.2)
    await harness.client.enqueue("busy", 2, delay_s=3600)
    options = harness.registry.get("busy").options
    reader = BacklogReader(harness.redis, "rt")
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        backlog = await reader.read("busy", options)
        assert backlog is not None
        if backlog.ready:
            break
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert backlog.ready == 1 and backlog.schedulable == 1  # the hour-away one does not count
    (due,) = await harness.setup.zrangebyscore("{rt:busy}:delayed", "-inf", "+inf", 0, 1,
                                               withscores=True)  # fmt: skip
    assert backlog.oldest_ready_ms == int(due[1])


async def test_scale_answers_the_replicas_the_backlog_needs(make_client: Make) -> None:
    client = await make_client()
    await _enqueue(client, "busy", 7)  # 2 in flight (concurrency 2) + 5 schedulable
    await _enqueue(client, "limited", 5)  # 1 in flight + 0 schedulable (rate), 4 held
    await _enqueue(client, "capped", 4)  # 1 in flight + 0 schedulable (cap), 3 held
    await _metrics_until(client, {("queue_in_flight_leases", _fn("busy")): 2,
                                  ("queue_in_flight_leases", _fn("limited")): 1,
                                  ("queue_in_flight_leases", _fn("capped")): 1})  # fmt: skip
    response = await client.get("/v1/scale?target=0.5", headers=AUTH)
    assert response.status == 200, await response.text()
    body = await response.json()
    busy = body["functions"]["busy"]
    assert busy["schedulable"] == 5 and busy["in_flight"] == 2
    assert busy["slots_per_instance"] == 2
    assert busy["replicas"] == math.ceil((5 + 2) / (2 * 0.5)) == 7
    limited = body["functions"]["limited"]
    assert limited["held"] == {"breaker": 0, "max_in_flight": 0, "rate_limit": 4}
    assert limited["replicas"] == math.ceil(1 / (4 * 0.5)) == 1  # the held jobs ask for none
    capped = body["functions"]["capped"]
    assert capped["held"]["max_in_flight"] == 3 and capped["replicas"] == 1
    assert body["functions"]["broken"]["replicas"] == 0  # nothing waits, nothing runs
    # every replica runs every function: the fleet needs the most any function needs
    assert body["fleet"]["replicas"] == 7
    assert body["target"] == 0.5

    default = await (await client.get("/v1/scale", headers=AUTH)).json()
    assert default["target"] == 0.7  # scale.target_utilization
    assert default["functions"]["busy"]["replicas"] == math.ceil(7 / (2 * 0.7)) == 5


async def test_scale_takes_its_default_target_from_config_and_refuses_a_bad_one(
    make_client: Make,
) -> None:
    from runtime.config.schema import ScaleSettings

    client = await make_client(scale=ScaleSettings(target_utilization=0.25))
    body = await (await client.get("/v1/scale", headers=AUTH)).json()
    assert body["target"] == 0.25
    assert body["fleet"] == {"replicas": 0, "busiest": None}
    for bad in ("0", "1.5", "x", "nan"):
        response = await client.get(f"/v1/scale?target={bad}", headers=AUTH)
        assert response.status == 400, bad
        assert (await response.json())["error"]["code"] == "bad_parameter"
    assert (await client.get("/v1/scale?tagret=0.5", headers=AUTH)).status == 400
    assert (await client.get("/v1/scale")).status == 401  # the /v1 token, like every route


async def test_the_serve_role_of_docs_security_md_may_read_the_backlog(
    make_harness: MakeHarness, redis_url: str
) -> None:
    """The script runs with the serve user's rights (Redis checks each command a script
    runs): a refusal must surface as an error, never read as an empty backlog."""
    from runtime.config.schema import RedisSettings
    from runtime.errors import BrokerPermissionError
    from runtime.queue.connection import connect
    from tests.integration.test_acl import PASSWORD, roles

    harness = await make_harness(HANDLERS, start=False)
    await harness.client.enqueue("busy", 1)
    rules = roles()["rt-serve"]
    await harness.setup.execute_command("ACL", "SETUSER", "rt-serve", *rules)
    url = redis_url.replace("redis://", f"redis://rt-serve:{PASSWORD}@")
    serve = connect(RedisSettings(url=url, timeout_s=2), url)
    try:
        backlog = await BacklogReader(serve, "rt").read(
            "busy", harness.registry.get("busy").options
        )
        assert backlog is not None and backlog.ready == 1 and backlog.oldest_ready_ms is not None
        # without one command the script runs, the read fails with the script's name
        await harness.setup.execute_command("ACL", "SETUSER", "rt-serve", "-lindex")
        with pytest.raises(BrokerPermissionError, match="backlog"):
            await BacklogReader(serve, "rt").read("busy", harness.registry.get("busy").options)
    finally:
        await serve.aclose()
        await harness.setup.execute_command("ACL", "DELUSER", "rt-serve")
        await harness.setup.execute_command("ACL", "LOG", "RESET")  # test_acl reads it


async def test_keys_of_the_wrong_type_and_junk_read_as_empty_never_an_error(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(HANDLERS, start=False)
    await harness.client.enqueue("broken", 1)
    r = harness.setup
    await r.set("{rt:broken}:ready:high", "not a list")
    await r.rpush("{rt:broken}:ready:low", "no such id, not even a job id")
    await r.hset("{rt:broken}:rate", "x", "1")  # a hash where the limiter keeps a string
    await r.set("{rt:broken}:leased", "x")
    reports = {"a:1": "{not json", "b:2": '{"state": 3}', "c:3": '{"state": "open", "at": "soon"}'}
    await r.hset("{rt:broken}:breaker", mapping=reports)
    options = harness.registry.get("broken").options
    backlog = await BacklogReader(harness.redis, "rt").read("broken", options)
    assert backlog is not None
    assert backlog.ready == 2 and backlog.in_flight == 0  # the queued job and the junk id
    assert backlog.held == {"breaker": 0, "max_in_flight": 0, "rate_limit": 0}
    assert backlog.oldest_ready_ms is not None  # the real job's enqueue time
    # a breaker report that parses and is open, younger than the cooldown, holds them all
    now_s = (await r.time())[0]
    await r.hset("{rt:broken}:breaker", "d:4", f'{{"state": "open", "at": {now_s - 1}}}')
    held = await BacklogReader(harness.redis, "rt").read("broken", options)
    assert held is not None and held.held["breaker"] == 2 and held.schedulable == 0
    # and a newer report that says closed ends it
    await r.hset("{rt:broken}:breaker", "e:5", f'{{"state": "closed", "at": {now_s}}}')
    closed = await BacklogReader(harness.redis, "rt").read("broken", options)
    assert closed is not None and closed.held["breaker"] == 0 and closed.schedulable == 2
