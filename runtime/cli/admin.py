"""The operator's commands: ``stats``, ``peek``, ``purge-dlq``, ``requeue-dlq``.

The shell around ``runtime.queue.admin``: reading the functions folder for names and
caps, the confirmation a purge asks for, progress on a terminal, and printing
(``admin_text.py``) or JSON. Their arguments are in ``parser.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from collections.abc import Sequence

import msgspec

from runtime.cli.admin_text import (
    filter_text,
    peek_text,
    report_text,
    stats_text,
    tracebacks_text,
)
from runtime.cli.exits import ExitStatus
from runtime.config.registry import Registry, load_registry
from runtime.config.schema import Settings
from runtime.errors import BrokerUnavailable, RegistryError
from runtime.queue.admin import Admin
from runtime.queue.connection import connect
from runtime.queue.dlq import DlqFilter, DlqReport

ADMIN_COMMANDS = frozenset({"stats", "peek", "purge-dlq", "requeue-dlq"})


def _ask(question: str) -> bool:
    """The operator's yes or no, on the terminal."""
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


class _ProgressLine:
    """How far a long purge or requeue got, rewritten in place on a terminal's stderr."""

    def __init__(self) -> None:
        self._last = 0.0
        self.is_shown = False

    def __call__(self, report: DlqReport) -> None:
        now = time.monotonic()
        if now - self._last < 0.5:
            return
        self._last = now
        verb = {"purge": "purged", "requeue": "requeued"}[report.action]
        if report.is_dry_run:
            verb = "would " + report.action
        sys.stderr.write(
            f"\r{report.function}: {verb} {report.matched}, looked at {report.scanned} of "
            f"{report.dlq_length} ({report.elapsed_s:.0f} s)\x1b[K"
        )
        sys.stderr.flush()
        self.is_shown = True

    def clear(self) -> None:
        if self.is_shown:
            sys.stderr.write("\r\x1b[K")
            self.is_shown = False


def _progress() -> _ProgressLine | None:
    return _ProgressLine() if sys.stderr.isatty() else None


def _admin_registry(settings: Settings, names: Sequence[str]) -> Registry | None:
    """The folder gives names and caps; with names given, a broken folder is only a warning."""
    try:
        return load_registry(settings.functions_dir, settings.functions)
    except RegistryError as exc:
        if not names:
            raise
        print(f"warning: {exc}\n(continuing without the functions folder)", file=sys.stderr)
        return None


def _warn_unknown(registry: Registry | None, name: str) -> None:
    if registry is not None and name not in registry:
        known = ", ".join(registry.names) or "none"
        print(f"warning: '{name}' is not in the functions folder (known: {known})", file=sys.stderr)


async def admin_main(args: argparse.Namespace, settings: Settings, redis_url: str) -> ExitStatus:
    named = list(args.function or []) if args.command == "stats" else [args.function or ""]
    registry = _admin_registry(settings, [n for n in named if n])
    redis = connect(settings.redis, redis_url)
    try:
        admin = Admin(redis, settings.namespace)
        if args.command == "stats":
            return await _stats(admin, args, registry)
        if args.command == "peek":
            return await _peek(admin, args, registry)
        dlq_filter = DlqFilter(tuple(args.reason or ()), args.older_than or 0.0)
        if args.command == "purge-dlq":
            return await _purge(admin, args, registry, dlq_filter)
        return await _requeue(admin, args, registry, dlq_filter)
    finally:
        await redis.aclose()


async def _stats(admin: Admin, args: argparse.Namespace, registry: Registry | None) -> ExitStatus:
    names = args.function or (registry.names if registry else [])
    caps = {spec.name: spec.options.max_in_flight for spec in registry or ()}
    in_place = args.watch and not args.json and sys.stdout.isatty()
    shown = 0
    while True:
        try:
            stats = await admin.stats(names, caps, registry.names if registry else ())
            text = msgspec.json.encode(stats).decode() if args.json else stats_text(stats)
            if args.watch and not args.json:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stats.now_ms / 1000))
                text = f"runtime stats at {when} UTC, every {args.interval:g}s\n\n{text}"
        except BrokerUnavailable as exc:
            if not args.watch:
                raise
            text = f"Redis unreachable: {exc}; retrying every {args.interval:g}s"
            if args.json:
                text = json.dumps({"error": text})
        if in_place:
            sys.stdout.write("\x1b[H\x1b[2J")  # home, clear: refresh in place
        elif shown and not args.json:
            print()
        print(text, flush=True)
        shown += 1
        if not args.watch or (args.iterations and shown >= args.iterations):
            return ExitStatus.OK
        await asyncio.sleep(args.interval)


async def _peek(admin: Admin, args: argparse.Namespace, registry: Registry | None) -> ExitStatus:
    _warn_unknown(registry, args.function)
    peek = await admin.peek(
        args.function, is_dlq=args.dlq, count=args.count, with_traceback=args.traceback
    )
    if args.json:
        print(msgspec.json.encode(peek).decode())
    else:
        print(peek_text(peek, args.width or shutil.get_terminal_size().columns))
        if args.traceback:
            print(tracebacks_text(peek))
    return ExitStatus.OK


async def _purge(
    admin: Admin, args: argparse.Namespace, registry: Registry | None, dlq_filter: DlqFilter
) -> ExitStatus:
    if args.all and registry is None:
        print("error: --all needs the functions folder; name a FUNCTION instead", file=sys.stderr)
        return ExitStatus.USAGE
    names = registry.names if args.all and registry else [args.function]
    if not args.all:
        _warn_unknown(registry, args.function)
    if not args.dry_run and not args.yes:
        # Refused even when there is nothing to purge: a script must not learn that it needs
        # --yes only on the day the DLQ is not empty.
        if not sys.stdin.isatty():
            print("error: refusing to purge without confirmation: no terminal is attached; "
                  "pass --yes to purge non-interactively (or --dry-run to look first)",
                  file=sys.stderr)  # fmt: skip
            return ExitStatus.USAGE
        total = sum([await admin.dlq_length(name) for name in names])
        where = args.function if not args.all else f"{len(names)} functions ({', '.join(names)})"
        question = f"Purge up to {total} dead-lettered jobs of {where} ({filter_text(dlq_filter)})?"
        if total and not _ask(question):
            print("aborted: nothing was purged", file=sys.stderr)
            return ExitStatus.FAILED
    reports = []
    progress = _progress()
    for name in names:
        report = await admin.purge_dlq(name, dlq_filter, is_dry_run=args.dry_run, progress=progress)
        if progress is not None:
            progress.clear()
        reports.append(report)
    if args.json:
        print(msgspec.json.encode(reports).decode())
        return ExitStatus.OK
    for report in reports:
        print(report_text(report))
    if len(reports) > 1:
        verb = "would purge" if args.dry_run else "purged"
        print(f"{verb} {sum(r.matched for r in reports)} dead jobs in all")
    return ExitStatus.OK


async def _requeue(
    admin: Admin, args: argparse.Namespace, registry: Registry | None, dlq_filter: DlqFilter
) -> ExitStatus:
    _warn_unknown(registry, args.function)
    progress = _progress()
    report = await admin.requeue_dlq(
        args.function,
        dlq_filter,
        limit=args.limit,
        rate_per_s=args.rate,
        is_dry_run=args.dry_run,
        progress=progress,
    )
    if progress is not None:
        progress.clear()
    print(msgspec.json.encode(report).decode() if args.json else report_text(report))
    return ExitStatus.OK
