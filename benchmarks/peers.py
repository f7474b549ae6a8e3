"""Peer task queues for ``run.py --peers``: a no-op worker and a bulk producer for each.

This file runs under ``benchmarks/.venv-peers/bin/python`` (see ``setup-peers.sh``), never
under the project's own virtualenv, so the peers stay out of the project's dependencies.
``run.py`` imports it only for the tables below (``PEERS``); every peer library is imported
inside the function that needs it.

    peers.py worker   arq|saq|dramatiq --redis URL --concurrency N   (runs until SIGTERM)
    peers.py enqueue  arq|saq|dramatiq --redis URL --jobs N          (prints {"enqueue_s": …})

Each worker runs in one process with the setting that gave it the best no-op drain on the
2-core machine of docs/performance.md (``PEERS[...].setup`` says which), with no per-job
logging, like the runtime under test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

# Producers keep this many enqueues in flight at once (the peers have no bulk enqueue).
ENQUEUE_WINDOW = 200
# arq sleeps poll_delay between polls of its queue, each poll starting at most max_jobs jobs:
# its default 0.5 s would cap it near 2 x 256 jobs/s.
ARQ_POLL_DELAY_S = 0.005


@dataclass(frozen=True)
class Peer:
    name: str
    remaining: tuple[str, str]  # (Redis command, key) giving the jobs not yet finished
    concurrency: int  # jobs (or threads) the worker runs at once
    setup: str  # how the worker is configured, for the report


PEERS: dict[str, Peer] = {
    # arq removes a job from its queue zset when it finishes (and stores its result).
    "arq": Peer(
        "arq",
        ("ZCARD", "arq:queue"),
        256,
        f"asyncio, max_jobs=256, poll_delay={ARQ_POLL_DELAY_S}s, results kept (default)",
    ),
    # saq keeps every unfinished job (queued or active) in its `incomplete` zset.
    "saq": Peer(
        "saq",
        ("ZCARD", "saq:default:incomplete"),
        10,
        "asyncio, concurrency=10 (its default; 50 and 256 were slower here)",
    ),
    # dramatiq keeps a message's body in `<queue>.msgs` until the worker acks it.
    "dramatiq": Peer(
        "dramatiq",
        ("HLEN", "dramatiq:default.msgs"),
        32,
        "threads, worker_threads=32 (default 8; 16 and 64 were slower here), default middleware",
    ),
}


# -- arq ------------------------------------------------------------------------------


async def _arq_noop(ctx: dict[str, Any]) -> None:
    return None


def arq_worker(url: str, concurrency: int) -> None:
    from arq.connections import RedisSettings
    from arq.worker import Worker

    worker = Worker(
        functions=[_arq_noop],
        redis_settings=RedisSettings.from_dsn(url),
        max_jobs=concurrency,
        poll_delay=ARQ_POLL_DELAY_S,
        handle_signals=True,
    )
    worker.run()


async def arq_enqueue(url: str, jobs: int) -> float:
    from arq.connections import RedisSettings, create_pool

    pool = await create_pool(RedisSettings.from_dsn(url))
    try:
        started = time.perf_counter()
        await _windowed(jobs, lambda: pool.enqueue_job("_arq_noop"))
        return time.perf_counter() - started
    finally:
        await pool.aclose()


# -- saq ------------------------------------------------------------------------------


async def _saq_noop(ctx: dict[str, Any]) -> None:
    return None


def saq_worker(url: str, concurrency: int) -> None:
    from saq import Queue, Worker

    async def main() -> None:
        queue = Queue.from_url(url)
        await queue.connect()
        worker = Worker(queue, functions=[("noop", _saq_noop)], concurrency=concurrency)
        await worker.start()  # returns once SIGTERM/SIGINT stopped it

    asyncio.run(main())


async def saq_enqueue(url: str, jobs: int) -> float:
    from saq import Queue

    queue = Queue.from_url(url)
    await queue.connect()
    try:
        started = time.perf_counter()
        await _windowed(jobs, lambda: queue.enqueue("noop"))
        return time.perf_counter() - started
    finally:
        await queue.disconnect()


# -- dramatiq -------------------------------------------------------------------------


def _dramatiq_actor(url: str) -> Any:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=url)
    dramatiq.set_broker(broker)

    def noop() -> None:
        return None

    return dramatiq.actor(noop, actor_name="noop", broker=broker, max_retries=0)


def dramatiq_worker(url: str, concurrency: int) -> None:
    import threading

    from dramatiq import Worker

    actor = _dramatiq_actor(url)
    worker = Worker(actor.broker, worker_threads=concurrency)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    stop.wait()
    worker.stop()
    actor.broker.close()


async def dramatiq_enqueue(url: str, jobs: int) -> float:
    actor = _dramatiq_actor(url)
    started = time.perf_counter()
    for _ in range(jobs):
        actor.send()
    elapsed = time.perf_counter() - started
    actor.broker.close()
    return elapsed


# -- shared ---------------------------------------------------------------------------


async def _windowed(jobs: int, make: Any) -> None:
    """Run ``make()`` ``jobs`` times, at most ENQUEUE_WINDOW at once."""
    for start in range(0, jobs, ENQUEUE_WINDOW):
        await asyncio.gather(*(make() for _ in range(min(ENQUEUE_WINDOW, jobs - start))))


WORKERS = {"arq": arq_worker, "saq": saq_worker, "dramatiq": dramatiq_worker}
PRODUCERS = {"arq": arq_enqueue, "saq": saq_enqueue, "dramatiq": dramatiq_enqueue}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("role", choices=["worker", "enqueue"])
    p.add_argument("peer", choices=sorted(PEERS))
    p.add_argument("--redis", required=True, metavar="URL")
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--jobs", type=int, default=1)
    args = p.parse_args(argv)
    if args.role == "worker":
        WORKERS[args.peer](args.redis, args.concurrency)
        return 0
    elapsed = asyncio.run(PRODUCERS[args.peer](args.redis, args.jobs))
    print(json.dumps({"enqueue_s": elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
