"""The producer and load tools, ``runtime enqueue-dir`` and ``runtime bench``: what they
share (the function must be in the folder; a broker and a producer on Redis) before each
runs (``enqueue_dir.py``, ``bench.py``).
"""

from __future__ import annotations

import argparse
import sys

from runtime.cli.bench import bench
from runtime.cli.enqueue_dir import enqueue_dir
from runtime.cli.exits import ExitStatus
from runtime.client import Producer
from runtime.config.registry import load_registry
from runtime.config.schema import Settings
from runtime.queue.connection import connect
from runtime.queue.sharded import ShardedBroker

TOOL_COMMANDS = frozenset({"enqueue-dir", "bench"})


async def tools_main(args: argparse.Namespace, settings: Settings, redis_url: str) -> ExitStatus:
    registry = load_registry(settings.functions_dir, settings.functions)
    if args.function not in registry:
        known = ", ".join(registry.names) or "none"
        print(f"error: unknown function '{args.function}' (known: {known})", file=sys.stderr)
        return ExitStatus.USAGE
    redis = connect(settings.redis, redis_url)
    try:
        broker = ShardedBroker(
            redis,
            settings.namespace,
            keep_result_s=settings.worker.keep_result_s,
            block_s=settings.redis.block_s,
        )
        producer = Producer(broker, registry)
        if args.command == "enqueue-dir":
            params = dict(settings.params.get(args.function, {}))
            return await enqueue_dir(args, producer, registry, broker, params)
        return await bench(args, broker, producer, registry)
    finally:
        await redis.aclose()
