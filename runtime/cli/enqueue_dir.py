"""``runtime enqueue-dir``: walk a tree and enqueue one job per file (path, size, mtime),
with a priority by extension, paced to a rate, with a progress line.

Its job ids are digests of (path, size, mtime), so running it again on an unchanged tree
enqueues nothing new (as long as the earlier jobs are still known to Redis: completed ones
for ``worker.keep_result_s``); the summary then says how many of those known jobs are
dead-lettered, since enqueueing them again does not run them again.

A function that only accepts files under a root reads it from ``[params.<function>] root``
(``functions/file_stats.py`` does). When that parameter is set in the configuration this
command reads, a tree outside the root is refused up front, before anything is enqueued:
the handler would reject every one of its files.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec

from runtime.cli.exits import ExitStatus
from runtime.cli.pacing import Pacer, Progress
from runtime.client import Producer
from runtime.config.registry import Registry
from runtime.function import PRIORITIES, Priority
from runtime.queue.queries import JobQueries

STATE_BATCH = 1000  # ids of already-known jobs whose state one pipeline reads
BATCH = 5000  # files a call of enqueue_many (pipelined by it in chunks) when not paced


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


def outside_root(tree: Path, function: str, params: dict[str, object]) -> str | None:
    """Why the function would reject every file of ``tree`` (None: it would not, or this
    cannot be told): the tree is not under the function's ``root`` parameter."""
    allowed = params.get("root")
    if not isinstance(allowed, str) or not allowed:
        return None
    root, resolved = Path(allowed).resolve(), tree.resolve()
    if resolved.is_relative_to(root):
        return None
    return (
        f"{tree}: {resolved} is outside the allowed root of {function}, {root} "
        f"([params.{function}] root = {allowed!r}): its handler would reject every file; "
        "enqueue a folder under that root, or change the root in the configuration the "
        "servers and this command read (RUNTIME_PARAMS__" + function.upper() + "__ROOT)"
    )


async def _dead_among(queries: JobQueries, function: str, ids: list[str]) -> int:
    dead = 0
    for start in range(0, len(ids), STATE_BATCH):
        states = await queries.states(function, ids[start : start + STATE_BATCH])
        dead += sum(1 for state in states if state == "dead")
    return dead


async def enqueue_dir(
    args: argparse.Namespace,
    producer: Producer,
    registry: Registry,
    queries: JobQueries,
    params: dict[str, object],
) -> ExitStatus:
    root = Path(args.tree)
    if not os.path.isdir(root):  # noqa: ASYNC240 (a single stat, before any work)
        print(f"error: {args.tree}: not a folder", file=sys.stderr)
        return ExitStatus.USAGE
    refused = outside_root(root, args.function, params)
    if refused is not None:
        print(f"error: {refused}", file=sys.stderr)
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
    pacer = Pacer(args.rate)
    progress = Progress("enqueue", len(jobs))
    created = 0
    known: list[str] = []
    started = time.monotonic()
    size = pacer.batch(BATCH)
    try:
        for start in range(0, len(jobs), size):
            batch = jobs[start : start + size]
            await pacer.wait(len(batch))
            for lane in PRIORITIES:  # one call a lane: enqueue_many takes one priority
                of_lane = [j for j in batch if j.priority == lane]
                results = await producer.enqueue_many(
                    args.function,
                    [{"path": j.path, "size": j.size, "mtime": j.mtime} for j in of_lane],
                    job_ids=[file_job_id(j) for j in of_lane],
                    priority=lane,
                )
                for result in results:
                    if result.error is not None:
                        raise result.error  # Redis refused it (a file's payload validates)
                    created += result.created
                    if not result.created and result.job_id is not None:
                        known.append(result.job_id)
            progress.update(start + len(batch), f"new {created}, already queued {len(known)}")
    finally:
        progress.close()
    dead = await _dead_among(queries, args.function, known) if known else 0
    summary = {
        "files": len(jobs),
        "enqueued": created,
        "already_known": len(known),
        "already_dead": dead,
        "by_priority": by_lane,
        "elapsed_s": round(time.monotonic() - started, 3),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{len(jobs)} file(s): {created} enqueued, {len(known)} already known "
            f"(high {by_lane['high']}, default {by_lane['default']}, low {by_lane['low']}) "
            f"in {summary['elapsed_s']} s"
        )
        if dead:
            print(
                f"{dead} of the {len(known)} already known are dead-lettered, and enqueueing "
                f"them again does not run them: see why with `runtime peek {args.function} "
                f"--dlq --traceback`, then fix and `runtime requeue-dlq {args.function}`"
            )
    return ExitStatus.OK
