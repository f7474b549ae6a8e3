"""Two figures of issue 13, measured in one process against a private redis-server:

    PYTHONPATH=. python benchmarks/idle_cost.py [--orphans 10000] [--window 10]

1. Orphan drain: ``--orphans`` ids with no job hash (what ``allkeys-lru`` eviction leaves in
   a lane) ahead of one real job; the time until that job completes, as ids/s.
2. Idle cost: after a 100-job burst on a function with ``rate_limit="20/s"``,
   ``rate_burst=5``, ``concurrency=16`` (and on the same function unlimited), the Redis
   commands/s (``INFO commandstats``, which counts the commands scripts run; the
   benchmark's own INFO calls taken out) and this process's CPU while the queue is empty.

Default worker settings (``idle_poll_s`` 1 s). A one-off measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import redis.asyncio as aioredis
import redis.exceptions

from runtime.client import Client
from runtime.config.registry import load_registry
from runtime.config.schema import RedisSettings, Settings
from runtime.execution.dispatcher import Dispatcher
from runtime.queue.broker import RedisBroker
from runtime.queue.connection import connect

SOURCES = {  # one function a runtime, so neither's idle cost hides in the other's figure
    "paced": """
        from runtime import function

        @function(concurrency=16, rate_limit="20/s", rate_burst=5)
        async def paced(n: int) -> int:
            return n
    """,
    "plain": """
        from runtime import function

        @function(concurrency=16)
        async def plain(n: int) -> int:
            return n
    """,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def commands(r: aioredis.Redis) -> int:
    stats = await r.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


class Runtime:
    def __init__(self, url: str, folder: Path) -> None:
        settings = Settings(redis=RedisSettings(url=url))
        self.redis = connect(settings.redis, url)
        self.broker = RedisBroker(self.redis, "rt", keep_result_s=600, block_s=0.4)
        self.registry = load_registry(folder, {})
        self.client = Client.from_settings(settings, url, self.registry)
        self.dispatcher = Dispatcher(self.registry, self.broker, settings)

    async def close(self) -> None:
        await self.dispatcher.drain(2.0)
        await self.client.close()
        await self.redis.aclose()


async def orphan_drain(url: str, folder: Path, n: int) -> float:
    rt = Runtime(url, folder)
    await rt.redis.flushdb()
    lane = "{rt:plain}:ready:default"
    for i in range(0, n, 1000):
        await rt.redis.rpush(lane, *[f"plain.gone{j}" for j in range(i, min(n, i + 1000))])
    job = await rt.client.enqueue("plain", 1)
    started = time.monotonic()
    rt.dispatcher.start()
    await rt.client.result(job, 3600)
    elapsed = time.monotonic() - started
    await rt.close()
    return n / elapsed


async def idle_cost(url: str, folder: Path, function: str, window_s: float) -> tuple[float, float]:
    rt = Runtime(url, folder)
    await rt.redis.flushdb()
    rt.dispatcher.start()
    ids = [await rt.client.enqueue(function, i) for i in range(100)]
    for job_id in ids:
        await rt.client.wait(job_id, 60)
    await asyncio.sleep(1.0)  # past the last claims of the burst
    probe = aioredis.Redis.from_url(url)
    before, cpu0, t0 = await commands(probe), time.process_time(), time.monotonic()
    await asyncio.sleep(window_s)
    after, cpu1, t1 = await commands(probe), time.process_time(), time.monotonic()
    await probe.aclose()
    await rt.close()
    elapsed = t1 - t0
    return (after - before - 1) / elapsed, 100 * (cpu1 - cpu0) / elapsed


async def main(orphans: int, window_s: float) -> None:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed"
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for name, source in SOURCES.items():
            folders[name] = Path(tmp) / name
            folders[name].mkdir()
            (folders[name] / "handlers.py").write_text(textwrap.dedent(source))
        port = free_port()
        server = subprocess.Popen(  # noqa: ASYNC220 (a child started once, not awaited)
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            url = f"redis://127.0.0.1:{port}/0"
            probe = aioredis.Redis.from_url(url)
            for _ in range(100):
                try:
                    await probe.ping()
                    break
                except (OSError, redis.exceptions.ConnectionError):
                    await asyncio.sleep(0.05)
            await probe.aclose()
            rate = await orphan_drain(url, folders["plain"], orphans)
            print(f"orphan drain: {orphans} orphan ids at {rate:,.0f} ids/s")
            for function in ("paced", "plain"):
                cmds, cpu = await idle_cost(url, folders[function], function, window_s)
                print(f"idle {function}: {cmds:.1f} Redis commands/s, {cpu:.2f} % of a core")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--orphans", type=int, default=10_000)
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(main(args.orphans, args.window))
