"""`runtime deploy` and `rollback` tell the truth: they wait for the fleet's answer, say
who refused and why, exit non-zero, and a version the fleet refused does not stay active.
A runtime checks sizes in Redis before it fetches anything, and does not fetch a refused
version again for a mere notification.

Real `runtime serve` processes and a real redis-server (see test_deploy.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from runtime.config.schema import RedisSettings
from runtime.deploy.store import DeployStore
from runtime.errors import DeployError
from runtime.queue.connection import connect
from tests.integration.serving import wait_until
from tests.integration.test_deploy import KEY, Fleet

pytestmark = pytest.mark.integration

OTHER_KEY = "another-signing-key-of-some-other-team-" + "y" * 8
BIG_MANIFEST_BYTES = 200 * 1024 * 1024


@pytest.fixture
def fleet(tmp_path: Path, redis_url: str) -> Iterator[Fleet]:
    made = Fleet(tmp_path, redis_url)
    yield made
    made.stop_all()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=60)
    yield client
    await client.aclose()


async def test_a_deploy_the_fleet_refuses_exits_non_zero_and_does_not_stay_active(
    fleet: Fleet, redis: aioredis.Redis
) -> None:
    fleet.deploy("v1")
    a, b = fleet.spawn(), fleet.spawn()
    await fleet.wait_loaded(1, a, b)

    fleet.write("v2")
    proc = fleet.cli("deploy", "src", expect=1, RUNTIME_DEPLOY__SIGNING_KEY=OTHER_KEY)
    out = proc.stdout + proc.stderr
    assert "0 of 2 accepted" in out, out
    assert len(re.findall(r"refused: signature does not verify", proc.stdout)) == 2, out
    assert "version 1 is active again" in out, out
    assert OTHER_KEY not in out and KEY not in out
    assert await redis.get("{rt}:deploy:active") == b"1"

    # An instance started afterwards runs the last good version; it does not answer 503.
    late = fleet.spawn()
    await fleet.wait_loaded(1, late)
    assert fleet.ready(late)[0] == 200
    assert fleet.deployment(a)["loaded"] == 1 and fleet.deployment(b)["loaded"] == 1


async def test_deploy_and_rollback_report_every_instance_that_accepted(fleet: Fleet) -> None:
    fleet.deploy("v1")
    a, b = fleet.spawn(), fleet.spawn()
    await fleet.wait_loaded(1, a, b)

    fleet.write("v2")
    proc = fleet.cli("deploy", "src")
    assert "2 of 2 accepted" in proc.stdout, proc.stdout + proc.stderr
    assert "version 2 (" in proc.stdout and "active (was 1)" in proc.stdout
    assert all(fleet.deployment(p)["loaded"] == 2 for p in (a, b))  # no need to wait

    proc = fleet.cli("rollback", "--json")
    body = json.loads(proc.stdout)
    assert body["active"] == 1 and body["was"] == 2
    assert sorted(body["fleet"]["accepted"]) == sorted(
        i for i in body["fleet"]["accepted"] if f"-{a.pid}-" in i or f"-{b.pid}-" in i
    )
    assert len(body["fleet"]["accepted"]) == 2 and body["fleet"]["refused"] == {}
    assert all(fleet.deployment(p)["loaded"] == 1 for p in (a, b))

    fleet.write("v3")
    proc = fleet.cli("deploy", "src", "--no-wait")
    assert "accepted" not in proc.stdout + proc.stderr
    await fleet.wait_loaded(3, a, b)


async def test_one_instance_refusing_rolls_the_pointer_back_and_names_it(fleet: Fleet) -> None:
    fleet.deploy("v1")
    healthy, lacking = fleet.spawn(), fleet.spawn(DEPLOY_TEST_BREAK="v2")
    await fleet.wait_loaded(1, healthy, lacking)

    fleet.write("v2")
    proc = fleet.cli("deploy", "src", expect=1)
    out = proc.stdout + proc.stderr
    assert "1 of 2 accepted" in out, out
    assert f"-{lacking.pid}-" in out and "only_on_some_hosts" in out
    assert "version 1 is active again" in out
    await fleet.wait_loaded(1, healthy, lacking)  # the one that took 2 went back to 1


async def test_an_instance_that_does_not_answer_in_time_is_named(fleet: Fleet) -> None:
    fleet.deploy("v1")
    runtime = fleet.spawn(RUNTIME_METRICS__REFRESH_S="0.5")  # beats often: surely live
    await fleet.wait_loaded(1, runtime)
    # A stopped process stays in the registry (it beat recently) but answers nothing.
    fleet.write("v2")
    runtime.send_signal(19)  # SIGSTOP
    try:
        # The deployer counts as live what beat within 3 refresh periods: 15 s here, so a
        # slow start of the command on a loaded machine cannot age the stopped one out.
        proc = fleet.cli("deploy", "src", "--wait", "1", expect=1, RUNTIME_METRICS__REFRESH_S="5")
    finally:
        runtime.send_signal(18)  # SIGCONT
    out = proc.stdout + proc.stderr
    assert "0 of 1 accepted" in out and "did not answer within 1 s" in out, out
    assert f"-{runtime.pid}-" in out
    await fleet.wait_loaded(2, runtime)  # nobody refused it: version 2 stays active


async def test_a_huge_manifest_is_refused_without_being_fetched(
    fleet: Fleet, redis: aioredis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet.deploy("v1")
    runtime = fleet.spawn()
    await fleet.wait_loaded(1, runtime)

    big = b"x" * BIG_MANIFEST_BYTES
    await redis.hset("{rt}:deploy:v:2", mapping={"manifest": big, "sig": "0" * 64, "files": b""})
    del big
    await redis.zadd("{rt}:deploy:versions", {"2": 2})
    sent_before = int((await redis.info("stats"))["total_net_output_bytes"])
    await redis.set("{rt}:deploy:active", "2")
    for _ in range(5):  # notifications: none of them makes the runtime fetch it
        await redis.publish("{rt}:deploy", "2")
    await wait_until(lambda: "2" in fleet.deployment(runtime).get("refused", {}), 10, fleet.logs)
    why = fleet.deployment(runtime)["refused"]["2"]
    assert f"manifest is {BIG_MANIFEST_BYTES} bytes" in why, why
    for _ in range(3):  # a few more periodic checks of the refused version
        await redis.publish("{rt}:deploy", "2")
    await wait_until(lambda: fleet.logs().count("refused") >= 1, 5, fleet.logs)
    listing = json.loads(fleet.cli("deployments", "--json").stdout)  # lists it, unfetched
    v2 = next(v for v in listing["versions"] if v["version"] == 2)
    assert v2["signature"] == "INVALID" and "not fetched" in v2["message"]
    sent = int((await redis.info("stats"))["total_net_output_bytes"]) - sent_before
    with capsys.disabled():
        print(f"\nbytes Redis sent while a runtime refused a 200 MB manifest: {sent}")
    assert sent < 1_000_000, sent  # far below the 200 MB manifest
    assert fleet.logs().count("deployment 2 refused") == 1, fleet.logs()
    assert fleet.ready(runtime)[0] == 200  # version 1 keeps serving


async def test_a_huge_active_pointer_is_refused_by_its_length(
    redis: aioredis.Redis, redis_url: str
) -> None:
    client = connect(RedisSettings(url=redis_url, timeout_s=30), redis_url)
    store = DeployStore(client, "rt", keep_versions=3)
    await redis.set("{rt}:deploy:active", b"1" * (20 * 1024 * 1024))
    sent_before = int((await redis.info("stats"))["total_net_output_bytes"])
    with pytest.raises(DeployError, match="holds a 20971520-byte value, not a version number"):
        await store.active()
    sent = int((await redis.info("stats"))["total_net_output_bytes"]) - sent_before
    await client.aclose()
    assert sent < 100_000, sent


async def test_a_refused_version_is_not_fetched_again_on_every_notification(
    fleet: Fleet, redis: aioredis.Redis
) -> None:
    fleet.deploy("v1")
    runtime = fleet.spawn(DEPLOY_TEST_BREAK="v2")
    await fleet.wait_loaded(1, runtime)
    fleet.write("v2")
    fleet.cli("deploy", "src", "--no-wait")
    await wait_until(lambda: "2" in fleet.deployment(runtime).get("refused", {}), 10, fleet.logs)
    for _ in range(5):  # a repeated message (or anyone with PUBLISH rights) changes nothing
        await redis.publish("{rt}:deploy", "2")
    # The watcher handles messages in order: once it has counted a malformed one sent
    # last, the five before it have been handled.
    await redis.publish("{rt}:deploy", "not-a-version")
    await wait_until(lambda: _rejected_notifications(fleet, runtime) == 1, 10, fleet.logs)
    assert fleet.logs().count("deployment 2 refused") == 1, fleet.logs()

    # An explicit activation (`runtime rollback 2`) is a new attempt: it is tried again.
    proc = fleet.cli("rollback", "2", expect=1)
    assert "0 of 1 accepted" in proc.stdout + proc.stderr
    assert fleet.logs().count("deployment 2 refused") == 2, fleet.logs()


def _rejected_notifications(fleet: Fleet, process: subprocess.Popen[bytes]) -> float:
    url = f"http://127.0.0.1:{fleet.ports[process.pid]}/metrics"
    with urllib.request.urlopen(url, timeout=2) as response:
        text = response.read().decode()
    match = re.search(
        r'^runtime_inputs_rejected_total\{source="deploy_notification"\} (\S+)$', text, re.M
    )
    return float(match[1]) if match else 0.0
