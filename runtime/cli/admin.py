"""The operator's commands: ``stats``, ``peek``, ``purge-dlq``, ``requeue-dlq``.

Their arguments and the shell around ``admin.py``: reading the functions folder for names
and caps, the confirmation a purge asks for, and printing (``admin_text.py``) or JSON.
Durations (``--older-than 2h``) and rates (``--rate 50/s``) are parsed here, and a bad one
is an argparse error naming the value and the accepted forms (exit status 2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from runtime.cli.admin_text import filter_text, peek_text, report_text, stats_text
from runtime.cli.exits import ExitStatus
from runtime.config.registry import Registry, load_registry
from runtime.config.settings import Settings
from runtime.errors import RegistryError
from runtime.queue.admin import MAX_BATCH, Admin, DlqFilter, DlqReport
from runtime.queue.broker import REDIS_ERRORS, connect

ADMIN_COMMANDS = frozenset({"stats", "peek", "purge-dlq", "requeue-dlq"})
DEFAULT_REQUEUE_RATE = "100/s"
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNITS_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_RATE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*/\s*(s|sec|m|min|h|hour)")
_RATE_UNITS_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600}
DURATION_FORMS = "a duration like 90s, 30m, 2h, 7d or 1h30m (units ms, s, m, h, d, w)"
RATE_FORMS = "a rate like 50/s, 300/m or 1000/h"


def parse_duration(text: str) -> float:
    """``"1h30m"`` → 5400.0 seconds; ValueError naming the value and the accepted forms."""
    compact = text.strip().lower().replace(" ", "")
    if not compact or _DURATION_RE.sub("", compact) != "":
        raise ValueError(f"invalid duration {text!r}: expected {DURATION_FORMS}")
    return sum(float(n) * _DURATION_UNITS_S[u] for n, u in _DURATION_RE.findall(compact))


def parse_rate(text: str) -> float:
    """``"300/m"`` → 5.0 per second; ValueError naming the value and the accepted forms."""
    match = _RATE_RE.fullmatch(text.strip().lower())
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"invalid rate {text!r}: expected {RATE_FORMS}, above zero")
    return float(match[1]) / _RATE_UNITS_S[match[2]]


def _arg(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a parser raising ValueError (argparse prints it, exit 2)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def int_in(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise ValueError(f"{text!r} must be a whole number from {low} to {high}")
        return value

    return int_in


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value >= 0.05:  # also refuses nan
        raise ValueError(f"{text!r} must be a number of seconds, at least 0.05")
    return value


def add_admin_parsers(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--functions", metavar="DIR", help="handler folder (names, caps)")
    common.add_argument("--redis", metavar="URL", help="Redis URL (default: the embedded one)")
    dlq_filter = argparse.ArgumentParser(add_help=False)
    dlq_filter.add_argument(
        "--reason", action="append", metavar="R", help="only dead jobs with this reason (repeat)"
    )
    dlq_filter.add_argument(
        "--older-than",
        type=_arg(parse_duration),
        metavar="DURATION",
        help="only jobs dead-lettered longer ago than this (30m, 2h, 7d, 1h30m)",
    )
    dlq_filter.add_argument("--dry-run", action="store_true", help="show, change nothing")
    dlq_filter.add_argument("--json", action="store_true", help="print the report as JSON")

    st = sub.add_parser("stats", parents=[common], help="queues, in flight, DLQ and rates")
    st.add_argument(
        "--function",
        action="append",
        metavar="NAME",
        help="only this function (repeat); any name, even one not in the folder",
    )
    st.add_argument("--json", action="store_true", help="one JSON document (a line per refresh)")
    st.add_argument("--watch", action="store_true", help="refresh until interrupted")
    st.add_argument(
        "--interval",
        type=_arg(_seconds),
        default=2.0,
        metavar="S",
        help="--watch refresh period (default 2)",
    )
    st.add_argument(
        "--iterations",
        type=_arg(_int_in(1, 10**9)),
        metavar="N",
        help="--watch: stop after N refreshes",
    )

    pk = sub.add_parser("peek", parents=[common], help="the next jobs, or the newest dead ones")
    pk.add_argument("function", metavar="FUNCTION")
    pk.add_argument("--dlq", action="store_true", help="the newest DLQ entries instead")
    pk.add_argument("-n", "--count", type=_arg(_int_in(1, MAX_BATCH)), default=20, metavar="N")
    pk.add_argument("--json", action="store_true", help="print the jobs as JSON")
    pk.add_argument(
        "--width",
        type=_arg(_int_in(20, 10_000)),
        metavar="COLUMNS",
        help="cut lines to this width (default: the terminal's)",
    )

    pg = sub.add_parser("purge-dlq", parents=[common, dlq_filter], help="delete dead jobs")
    target = pg.add_mutually_exclusive_group(required=True)
    target.add_argument("function", nargs="?", metavar="FUNCTION")
    target.add_argument("--all", action="store_true", help="every function of the folder")
    pg.add_argument("-y", "--yes", action="store_true", help="do not ask (needed without a tty)")

    rq = sub.add_parser(
        "requeue-dlq",
        parents=[common, dlq_filter],
        help="move dead jobs back to their ready lane, counters reset",
    )
    rq.add_argument("function", metavar="FUNCTION")
    rq.add_argument("--limit", type=_arg(_int_in(1, 10**12)), metavar="N", help="at most N jobs")
    rq.add_argument(
        "--rate",
        type=_arg(parse_rate),
        default=parse_rate(DEFAULT_REQUEUE_RATE),
        metavar="R/s",
        help=f"at most this fast (default {DEFAULT_REQUEUE_RATE})",
    )


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
        except REDIS_ERRORS as exc:
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
    peek = await admin.peek(args.function, is_dlq=args.dlq, count=args.count)
    if args.json:
        print(msgspec.json.encode(peek).decode())
    else:
        print(peek_text(peek, args.width or shutil.get_terminal_size().columns))
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
