"""One version, from pyproject.toml through the package metadata, shown everywhere a
running instance names itself: ``/readyz`` and the fleet registry of a real ``runtime
serve`` (``--version`` is tested in tests/unit/test_cli_errors.py)."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
import redis

from runtime.queue.keys import NamespaceKeys
from tests.integration.serving import ServeProcesses

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = version("redis-function-runtime")


@pytest.fixture
def fleet(tmp_path: Path, redis_url: str) -> Iterator[ServeProcesses]:
    processes = ServeProcesses(tmp_path, redis_url, {})
    try:
        yield processes
    finally:
        processes.stop_all()


def test_the_metadata_version_is_pyprojects() -> None:
    assert f'\nversion = "{EXPECTED}"\n' in (ROOT / "pyproject.toml").read_text()


@pytest.mark.timeout(60)
def test_a_serve_process_shows_its_version_in_readyz_and_the_registry(
    fleet: ServeProcesses, redis_url: str, tmp_path: Path
) -> None:
    functions = tmp_path / "functions"
    functions.mkdir()
    (functions / "hello.py").write_text(
        textwrap.dedent("""
            from runtime import function

            @function
            async def hello(x: int) -> int:
                return x
        """)
    )
    process = fleet.spawn("--functions", str(functions), RUNTIME_NAMESPACE="versions")
    fleet.wait_ready(process)
    status, body = fleet.ready(process)
    assert (status, body["version"]) == (200, EXPECTED)
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 15
    try:  # the first beat may come just after the first ready answer
        while not (infos := client.hvals(NamespaceKeys("versions").instances_info)):
            assert time.monotonic() < deadline, fleet.logs()
            time.sleep(0.05)
    finally:
        client.close()
    assert [json.loads(info)["version"] for info in infos] == [EXPECTED]
