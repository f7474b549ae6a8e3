"""The producer and load tools: ``runtime enqueue-dir`` and ``runtime bench``.

``enqueue-dir`` walks a tree and enqueues one job per file (path, size, mtime), with a
priority by extension, paced to a rate, with a progress line. Its job ids are digests of
(path, size, mtime), so running it again on an unchanged tree enqueues nothing new (as long
as the earlier jobs are still known to Redis: completed ones for ``worker.keep_result_s``).

``bench`` enqueues jobs at a steady rate (open loop: a slow runtime does not slow the
sender), waits for them, and prints throughput and end-to-end latency (enqueue to
completion, both on Redis time) p50/p95/p99/max.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from runtime.cli.exits import ExitStatus
from runtime.client import Producer
from runtime.config.registry import Registry, load_registry
from runtime.config.settings import Settings
from runtime.function import Priority
from runtime.queue.broker import RedisBroker, connect

TOOL_COMMANDS = frozenset({"enqueue-dir", "bench"})
BENCH_FILES_DIR = ".runtime/bench-files"


async def tools_main(args: argparse.Namespace, settings: Settings, redis_url: str) -> ExitStatus:
    registry = load_registry(settings.functions_dir, settings.functions)
    if args.function not in registry:
        known = ", ".join(registry.names) or "none"
        print(f"error: unknown function '{args.function}' (known: {known})", file=sys.stderr)
        return ExitStatus.USAGE
    redis = connect(settings.redis, redis_url)
    try:
        broker = RedisBroker(
            redis,
            settings.namespace,
            keep_result_s=settings.worker.keep_result_s,
            block_s=max(0.05, settings.redis.timeout_s * 0.8),
        )
        producer = Producer(broker, registry)
        if args.command == "enqueue-dir":
            return await enqueue_dir(args, producer, registry)
        return await bench(args, broker, producer, registry)
    finally:
        await redis.aclose()


# -- enqueue-dir -------------------------------------------------------------------------


class FileJob(msgspec.Struct):
    path: str
    size: int
    mtime: float
    priority: Priority


def _matches(rel: str, globs: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, g) or fnmatch.fnmatchcase(name, g) for g in globs)


def walk(
    root: Path,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    high_ext: Sequence[str] = (),
    default_priority: Priority = "default",
) -> Iterator[FileJob]:
    """Regular files under ``root`` (symlinks not followed), sorted, filtered by globs
    (matched against the path relative to ``root`` and against the file name)."""
    high = {e.lower() if e.startswith(".") else "." + e.lower() for e in high_ext if e}
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if include and not _matches(rel, include):
                continue
            if exclude and _matches(rel, exclude):
                continue
            try:
                st = path.lstat()
            except OSError:
                continue  # vanished while walking
            if not path.is_file() or path.is_symlink():
                continue
            priority: Priority = "high" if path.suffix.lower() in high else default_priority
            yield FileJob(str(path), st.st_size, st.st_mtime, priority)


def file_job_id(job: FileJob) -> str:
    """The same file, unchanged, always gets the same id: re-runs enqueue nothing new."""
    key = f"{job.path}\0{job.size}\0{job.mtime!r}".encode()
    return "f" + hashlib.sha256(key).hexdigest()[:40]


class _Pacer:
    """Open-loop pacing: the n-th send waits for its slot on a fixed timetable."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._start = time.monotonic()
        self._n = 0

    async def wait(self) -> None:
        if self._interval:
            due = self._start + self._n * self._interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        self._n += 1


class _Progress:
    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self._shown = sys.stderr.isatty()
        self._last = 0.0
        self._start = time.monotonic()

    def update(self, done: int, extra: str = "", *, force: bool = False) -> None:
        now = time.monotonic()
        if not self._shown or (now - self._last < 0.2 and not force):
            return
        self._last = now
        width = 30
        filled = int(width * done / self.total) if self.total else width
        rate = done / max(now - self._start, 1e-9)
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
            f"{rate:.0f}/s {extra}\x1b[K"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self._shown:
            sys.stderr.write("\n")


async def enqueue_dir(
    args: argparse.Namespace, producer: Producer, registry: Registry
) -> ExitStatus:
    root = Path(args.tree)
    if not os.path.isdir(root):  # noqa: ASYNC240 (a single stat, before any work)
        print(f"error: {args.tree}: not a folder", file=sys.stderr)
        return ExitStatus.USAGE
    spec = registry.get(args.function)

    def collect() -> list[FileJob]:
        return list(
            walk(
                root,
                include=args.include or (),
                exclude=args.exclude or (),
                high_ext=[e.strip() for e in args.high_priority_ext.split(",")],
                default_priority=spec.options.priority,
            )
        )

    jobs = await asyncio.to_thread(collect)
    by_lane = {p: sum(1 for j in jobs if j.priority == p) for p in ("high", "default", "low")}
    if args.dry_run:
        for job in jobs:
            print(f"{job.priority:7} {job.size:>10} {job.path}")
        summary = {"files": len(jobs), "by_priority": by_lane, "dry_run": True}
        print(json.dumps(summary) if args.json else f"would enqueue {len(jobs)} file(s)")
        return ExitStatus.OK
    pacer = _Pacer(args.rate)
    progress = _Progress("enqueue", len(jobs))
    created = existing = 0
    started = time.monotonic()
    try:
        for n, job in enumerate(jobs, start=1):
            await pacer.wait()
            payload = {"path": job.path, "size": job.size, "mtime": job.mtime}
            _, is_new = await producer.enqueue(
                args.function, payload, job_id=file_job_id(job), priority=job.priority
            )
            created += is_new
            existing += not is_new
            progress.update(n, f"new {created}, already queued {existing}")
    finally:
        progress.close()
    summary = {
        "files": len(jobs),
        "enqueued": created,
        "already_known": existing,
        "by_priority": by_lane,
        "elapsed_s": round(time.monotonic() - started, 3),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{len(jobs)} file(s): {created} enqueued, {existing} already known "
            f"(high {by_lane['high']}, default {by_lane['default']}, low {by_lane['low']}) "
            f"in {summary['elapsed_s']} s"
        )
    return ExitStatus.OK


# -- bench -------------------------------------------------------------------------------


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
    if args.count < 1:
        print("error: --count must be at least 1", file=sys.stderr)
        return ExitStatus.USAGE
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
    pacer = _Pacer(args.rate)
    progress = _Progress("send", args.count)
    started = time.monotonic()
    try:
        for i in range(args.count):
            await pacer.wait()
            body = {"path": files[i % len(files)]} if files else payload
            job_id, _ = await producer.enqueue(args.function, body)
            ids.append(job_id)
            progress.update(i + 1)
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
    progress = _Progress("wait", len(ids))
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
