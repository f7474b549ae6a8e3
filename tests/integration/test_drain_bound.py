"""SIGTERM's drain is bounded by the longest ``timeout_s`` of the loaded functions (plus a
margin), not only by ``worker.shutdown_grace_s``: a real ``runtime serve``, a real signal,
and handlers that sleep far past the bound. The bound is logged; the process is gone
soon after it; the job is released or left to its lease, never lost."""

from __future__ import annotations

import re
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis

from runtime.server.drain import DRAIN_MARGIN_S
from tests.integration.serving import ServeProcesses

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TIMEOUT_S = 2.0  # the longest timeout_s of the handlers below
GRACE_S = 60.0  # worker.shutdown_grace_s: far above it, so the timeouts make the bound
SLEEP_S = 90.0  # what each handler sleeps: far above both
TOKEN = "drain-token"
LOADED_MACHINE_S = 5.0  # start-up of the stop, the bounded steps, a loaded 2-core machine
HANDLERS = """
    import asyncio, time
    from runtime import function

    WITNESS = {witness!r}

    def note(what):
        with open(WITNESS, "a") as f:
            f.write(what + "\\n")

    @function(timeout_s={timeout}, max_attempts=10, backoff=(30, 30))
    def sleepy_thread(x: int) -> None:
        note("thread")
        time.sleep({sleep})  # a thread cannot be stopped: it runs on past its timeout

    @function(timeout_s=1, max_attempts=10, backoff=(30, 30))
    async def sleepy(x: int) -> None:
        note("async")
        await asyncio.sleep({sleep})
"""


class Serving(ServeProcesses):
    def __init__(self, tmp: Path, redis_url: str) -> None:
        env = {
            "RUNTIME_LOG__LEVEL": "INFO",
            "RUNTIME_WORKER__SHUTDOWN_GRACE_S": str(GRACE_S),
            "RUNTIME_HTTP__TOKEN": TOKEN,
        }
        super().__init__(tmp, redis_url, env)
        self.witness = tmp / "witness.log"
        self.folder = tmp / "functions"
        self.folder.mkdir(exist_ok=True)
        source = HANDLERS.format(witness=str(self.witness), timeout=TIMEOUT_S, sleep=SLEEP_S)
        (self.folder / "handlers.py").write_text(textwrap.dedent(source))

    def started(self, what: str) -> bool:
        return self.witness.exists() and what in self.witness.read_text()


@pytest.fixture
def serving(tmp_path: Path, redis_url: str) -> Iterator[Serving]:
    made = Serving(tmp_path, redis_url)
    yield made
    made.stop_all()


def _until(condition: object, timeout_s: float, what: str, serving: Serving) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s}s\n{serving.logs()}"
        time.sleep(0.05)


@pytest.mark.parametrize("function", ["sleepy_thread", "sleepy"])
def test_sigterm_ends_the_process_within_the_longest_timeout(
    serving: Serving, redis_url: str, function: str
) -> None:
    process = serving.spawn("--functions", str(serving.folder))
    serving.wait_ready(process, timeout_s=30)
    plain = sync_redis.Redis.from_url(redis_url)
    try:
        job_id = _enqueue(serving, process, function)
        _until(lambda: serving.started("thread" if function == "sleepy_thread" else "async"),
               20, "the job started", serving)  # fmt: skip
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        bound_s = TIMEOUT_S + DRAIN_MARGIN_S
        try:
            status = process.wait(timeout=bound_s + LOADED_MACHINE_S + 30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"alive {bound_s + 35}s after SIGTERM\n{serving.logs()}") from None
        took = time.monotonic() - started
        print(f"{function}: exit {status} {took:.2f}s after SIGTERM (bound {bound_s:g}s)")
        assert took < bound_s + LOADED_MACHINE_S, serving.logs()
        assert status == 0, serving.logs()  # a graceful stop, not the watchdog
        logged = re.search(r"draining: running jobs may finish for up to ([0-9.]+)s",
                           serving.logs())  # fmt: skip
        assert logged and float(logged.group(1)) == bound_s, serving.logs()
        # Nothing lost: the job waits to run again (its timeout's retry, or released), or
        # is still leased (its lease expires and it is reclaimed); never gone, never dead.
        state = plain.hget(f"{{rt:{function}}}:job:{job_id}", "state")
        assert state in (b"queued", b"delayed", b"running"), (state, serving.logs())
        placed = (
            plain.zscore(f"{{rt:{function}}}:delayed", job_id) is not None
            or plain.zscore(f"{{rt:{function}}}:leased", job_id) is not None
            or job_id.encode() in plain.lrange(f"{{rt:{function}}}:ready:default", 0, -1)
        )
        assert placed, serving.logs()
    finally:
        plain.close()


def _enqueue(serving: Serving, process: subprocess.Popen[bytes], function: str) -> str:
    import json
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{serving.ports[process.pid]}/v1/functions/{function}/jobs",
        data=b"1",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        job_id: str = json.loads(response.read())["job_id"]
    return job_id
