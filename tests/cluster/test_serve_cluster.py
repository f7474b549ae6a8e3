"""`runtime serve`, HTTP invoke, the CLI and ``Client`` on a real 3-master Redis Cluster,
with functions whose slots live on every master (issue 16: /readyz said not ready and
`invoke` died with MovedError for a function on another node)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.client import Client
from tests.integration.serving import ServeProcesses
from tests.redis_cluster import RedisCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NAMES = ["f0", "f1", "f2", "f3", "f4", "f5"]  # slots spread over the 3 masters
HANDLERS = "from runtime import function\n" + "".join(
    f"\n\n@function(max_attempts=2)\nasync def {name}(x: int) -> int:\n    return x + {i}\n"
    for i, name in enumerate(NAMES)
)


@pytest.fixture
def served(tmp_path: Path, cluster_url: str) -> Iterator[ServeProcesses]:
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    serve = ServeProcesses(tmp_path, cluster_url, {"RUNTIME_HTTP__TOKEN": "t0ken"})
    process = serve.spawn("--functions", str(folder))
    try:
        serve.wait_ready(process, timeout_s=30)
        yield serve
    finally:
        serve.stop_all()


def _cli(serve: ServeProcesses, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime", *argv, "--redis", serve.redis_url],
        cwd=serve.tmp, env=serve.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _answer(request: urllib.request.Request) -> object:
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_functions_span_every_master(redis_cluster: RedisCluster) -> None:
    owners = {redis_cluster.owner(f"{{rt:{name}}}:x").port for name in NAMES}
    assert len(owners) == 3


async def test_serve_and_invoke_every_function_on_a_cluster(served: ServeProcesses) -> None:
    port = served.ports[served.processes[0].pid]
    status, ready = served.ready(served.processes[0])
    assert status == 200, ready
    for i, name in enumerate(NAMES):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/functions/{name}/invoke",
            data=b"10",
            headers={"Authorization": "Bearer t0ken", "Content-Type": "application/json"},
            method="POST",
        )
        assert await asyncio.to_thread(_answer, request) == 10 + i
        done = _cli(served, "invoke", name, "5")
        assert (done.returncode, done.stdout.strip()) == (0, str(5 + i)), done.stderr
    async with Client(served.redis_url) as client:
        for i, name in enumerate(NAMES):
            job = await client.enqueue(name, 1)
            assert await client.result(job, timeout_s=30) == 1 + i
    stats = _cli(served, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
