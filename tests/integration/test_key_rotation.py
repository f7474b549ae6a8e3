"""Rotating the deploy signing key across a fleet of real `runtime serve` processes, with
no moment where no instance serves (docs/deploying.md, "Rotating the signing key").

Old fleet verifies key A; a deploy signed with A; the fleet restarted one instance at a
time to verify A and B; a deploy signed with B is accepted by all; A removed the same way;
then a version signed with A is refused with a message that says why, naming no key.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from runtime.client import Client
from tests.integration.test_deploy import Fleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY_A = "rotation-test-key-A-" + "a" * 24
KEY_B = "rotation-test-key-B-" + "b" * 24
SIGNS_A = {"RUNTIME_DEPLOY__SIGNING_KEY": KEY_A, "RUNTIME_DEPLOY__VERIFY_KEYS": "[]"}
VERIFIES_A_B = {"RUNTIME_DEPLOY__SIGNING_KEY": KEY_A, "RUNTIME_DEPLOY__VERIFY_KEYS": f'["{KEY_B}"]'}
SIGNS_B_VERIFIES_A = {
    "RUNTIME_DEPLOY__SIGNING_KEY": KEY_B,
    "RUNTIME_DEPLOY__VERIFY_KEYS": f'["{KEY_A}"]',
}
SIGNS_B = {"RUNTIME_DEPLOY__SIGNING_KEY": KEY_B, "RUNTIME_DEPLOY__VERIFY_KEYS": "[]"}


@pytest.fixture
def fleet(tmp_path: Path, redis_url: str) -> Iterator[Fleet]:
    made = Fleet(tmp_path, redis_url)
    yield made
    made.stop_all()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Client]:
    async with Client(redis_url) as c:
        yield c


def deploy(fleet: Fleet, tag: str, keys: dict[str, str], *args: str, expect: int = 0) -> int:
    fleet.write(tag)
    out = fleet.cli("deploy", "src", "--json", *args, expect=expect, **keys).stdout
    return int(json.loads(out)["version"])


async def roll(
    fleet: Fleet, old: list[subprocess.Popen[bytes]], keys: dict[str, str], version: int
) -> list[subprocess.Popen[bytes]]:
    """Replace each instance by one with ``keys``, one at a time: the new one is up and
    runs ``version`` before the old one stops, so some instance always serves."""
    new = []
    for i, process in enumerate(old):
        replacement = fleet.spawn(**keys)
        await fleet.wait_loaded(version, replacement, timeout_s=20)
        process.terminate()
        assert process.wait(timeout=20) == 0, fleet.logs()
        serving = [*new, replacement, *old[i + 1 :]]
        assert all(fleet.ready(p)[0] == 200 for p in serving)
        new.append(replacement)
    return new


@pytest.mark.timeout(180)
async def test_a_fleet_rotates_its_signing_key_without_downtime(
    fleet: Fleet, client: Client
) -> None:
    assert deploy(fleet, "v1", SIGNS_A) == 1
    processes = [fleet.spawn(**SIGNS_A), fleet.spawn(**SIGNS_A)]
    await fleet.wait_loaded(1, *processes, timeout_s=20)

    processes = await roll(fleet, processes, VERIFIES_A_B, 1)  # now verifies A and B
    assert await client.result(await client.enqueue("work", 0.0), 10) == "v1"

    # A deployer that signs with B (and still verifies A) publishes v2: all accept it.
    assert deploy(fleet, "v2", SIGNS_B_VERIFIES_A) == 2
    await fleet.wait_loaded(2, *processes)
    assert await client.result(await client.enqueue("work", 0.0), 10) == "v2"

    processes = await roll(fleet, processes, SIGNS_B, 2)  # A removed everywhere

    # A version signed with the retired key A is refused by every instance, with a
    # clear reason; v2 keeps serving. The deployer reports the refusals (exit 1).
    deploy(fleet, "v3-old-key", SIGNS_A, "--wait", "5", expect=1)
    for process in processes:
        why = fleet.deployment(process)["refused"]["3"]
        assert "signature does not verify with the key this process holds" in why
        assert "rotated out of deploy.verify_keys" in why
        status, body = fleet.ready(process)
        assert (status, body["checks"]["deployment"]["loaded"]) == (200, 2)
    assert await client.result(await client.enqueue("work", 0.0), 10) == "v2"

    logs = fleet.logs()
    assert KEY_A not in logs and KEY_B not in logs  # secrets never logged
