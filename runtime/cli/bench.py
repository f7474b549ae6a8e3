"""``runtime bench``: enqueue jobs at a steady rate (open loop: a slow runtime does not slow
the sender), wait for them, and print throughput and end-to-end latency (enqueue to
completion, both on Redis time) p50/p95/p99/max.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.cli.exits import ExitStatus
from runtime.cli.pacing import Pacer, Progress
from runtime.client import Producer
from runtime.config.registry import Registry
from runtime.queue.broker import RedisBroker

BENCH_FILES_DIR = ".runtime/bench-files"
SEND_BATCH = 5000  # jobs a call of enqueue_many when not paced (it pipelines them in chunks)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def _bench_files(count: int, size: int) -> Path:
    """Small files for file_stats, under the working folder (inside its default root)."""
    folder = Path(BENCH_FILES_DIR)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    line = b"the quick brown fox jumps over the lazy dog\n"
    body = (line * (size // len(line) + 1))[:size]
    for i in range(min(count, 100)):
        (folder / f"f{i:03d}.txt").write_bytes(body)
    return folder


async def bench(
    args: argparse.Namespace, broker: RedisBroker, producer: Producer, registry: Registry
) -> ExitStatus:
    files: list[str] = []
    folder: Path | None = None
    if args.payload is not None:
        try:
            payload: Any = json.loads(args.payload)
        except json.JSONDecodeError as exc:
            print(f"error: --payload is not JSON: {exc}", file=sys.stderr)
            return ExitStatus.USAGE
    elif args.function == "file_stats":
        folder = _bench_files(args.count, args.payload_size or 1024)
        files = sorted(str(p) for p in folder.iterdir())
        payload = None
    else:
        print(f"error: give --payload JSON for {args.function}", file=sys.stderr)
        return ExitStatus.USAGE
    ids: list[str] = []
    pacer = Pacer(args.rate)
    progress = Progress("send", args.count)
    started = time.monotonic()
    try:
        size = pacer.batch(SEND_BATCH)
        for start in range(0, args.count, size):
            n = min(size, args.count - start)
            await pacer.wait(n)
            bodies = [
                {"path": files[i % len(files)]} if files else payload
                for i in range(start, start + n)
            ]
            for result in await producer.enqueue_many(args.function, bodies):
                if result.error is not None:
                    raise result.error
                assert result.job_id is not None  # noqa: S101 — narrows a type: a result without error always has a job id
                ids.append(result.job_id)
            progress.update(start + n)
        sent_s = time.monotonic() - started
        progress.close()
        records = await _wait_all(broker, ids, args.timeout)
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    elapsed = time.monotonic() - started
    done = [r for r in records if r[0] in (b"completed", b"dead")]
    latencies = sorted((int(r[2]) - int(r[1])) / 1000 for r in done if r[1] and r[2])
    first_enq = min((int(r[1]) for r in done if r[1]), default=0)
    last_end = max((int(r[2]) for r in done if r[2]), default=0)
    figures = {
        "function": args.function,
        "count": args.count,
        "completed": sum(1 for r in records if r[0] == b"completed"),
        "dead": sum(1 for r in records if r[0] == b"dead"),
        "unfinished": args.count - len(done),
        "send_rate_per_s": round(args.count / sent_s, 1) if sent_s else None,
        "throughput_per_s": round(len(done) / ((last_end - first_enq) / 1000), 1)
        if last_end > first_enq
        else None,
        "throughput_per_min": round(len(done) / ((last_end - first_enq) / 60_000))
        if last_end > first_enq
        else None,
        "latency_s": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "max": latencies[-1] if latencies else float("nan"),
        },
        "elapsed_s": round(elapsed, 2),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        lat = figures["latency_s"]
        print(
            f"{args.function}: {figures['completed']} completed, {figures['dead']} dead, "
            f"{figures['unfinished']} unfinished of {args.count} in {elapsed:.1f} s\n"
            f"throughput {figures['throughput_per_s']}/s ({figures['throughput_per_min']}/min), "
            f"sent at {figures['send_rate_per_s']}/s\n"
            f"latency (enqueue to done) p50 {lat['p50'] * 1000:.1f} ms, "
            f"p95 {lat['p95'] * 1000:.1f} ms, p99 {lat['p99'] * 1000:.1f} ms, "
            f"max {lat['max'] * 1000:.1f} ms"
        )
    return ExitStatus.OK if figures["unfinished"] == 0 else ExitStatus.FAILED


async def _wait_all(broker: RedisBroker, ids: list[str], timeout_s: float) -> list[list[Any]]:
    """(state, enq ms, end ms) of every job, polling in pipelined batches until all are
    terminal or the time is up."""
    deadline = time.monotonic() + timeout_s
    progress = Progress("wait", len(ids))
    results: dict[str, list[Any]] = {}
    pending = list(ids)
    try:
        while pending and time.monotonic() < deadline:
            pipe = broker.redis.pipeline(transaction=False)
            for job_id in pending:
                pipe.hmget(broker.keys(job_id.split(".", 1)[0]).job(job_id), "state", "enq", "end")
            replies = await pipe.execute()
            still = []
            for job_id, reply in zip(pending, replies, strict=True):
                results[job_id] = reply
                if reply[0] not in (b"completed", b"dead"):
                    still.append(job_id)
            pending = still
            progress.update(len(ids) - len(pending))
            if pending:
                await asyncio.sleep(0.1)
    finally:
        progress.close()
    return [results.get(job_id, [None, None, None]) for job_id in ids]
