"""``python -m chaos.suite [--only 1,2,3 | --ci | --cluster] [--json out.json] [--seed N]
[--keep DIR]``

Runs the chaos scenarios, prints a table of their figures (and what failed), writes the same
as JSON, and exits 1 if any scenario failed (a job lost, duplicates beyond the bound, or a
check of its own), 2 on bad arguments, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from chaos.suite import report as text
from chaos.suite.report import ScenarioReport
from chaos.suite.runner import run_suite
from chaos.suite.scenarios import CI_SUBSET, CLUSTER_GROUP, CLUSTER_SUBSET, SCENARIOS


def _numbers(value: str) -> list[int]:
    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected numbers like 1,2,3") from None
    unknown = [n for n in numbers if n not in SCENARIOS]
    if unknown or not numbers:
        known = f"{min(SCENARIOS)}-{max(SCENARIOS)}"
        raise argparse.ArgumentTypeError(f"no scenario {unknown or value!r}; there are {known}")
    return numbers


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m chaos.suite", description=__doc__)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--only", type=_numbers, metavar="N,N", help="run these scenarios")
    ci = ",".join(map(str, CI_SUBSET + CLUSTER_SUBSET))
    which.add_argument("--ci", action="store_true", help=f"run what CI runs ({ci})")
    which.add_argument(
        "--cluster",
        action="store_true",
        help=f"run the Redis Cluster group ({','.join(map(str, CLUSTER_GROUP))})",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--seed", type=int, default=7, help="seed of job durations and toxics")
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep logs, AOF and witness in DIR")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return p


def _progress(report: ScenarioReport) -> None:
    print(f"[{report.number}] {report.title}: {report.verdict} in {report.wall_s} s", flush=True)
    if not report.is_passed and report.logs:
        print(report.logs, file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so every `finally` stops its processes by pid


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for s in SCENARIOS.values():
            ci = "ci" if s.is_ci else "  "
            print(f"{s.number:>2} {ci} {s.group:<7} {s.title:<26} {s.proves}")
        return 0
    if args.only:
        numbers = args.only
    elif args.ci:
        numbers = [*CI_SUBSET, *CLUSTER_SUBSET]
    else:
        numbers = list(CLUSTER_GROUP if args.cluster else SCENARIOS)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)
    began = time.monotonic()
    try:
        suite = run_suite(numbers, seed=args.seed, keep_dir=args.keep, on_report=_progress)
        reports = asyncio.run(suite)
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped", file=sys.stderr)
        return 130
    wall_s = round(time.monotonic() - began, 1)
    print()
    print(text.table(reports))
    extra = text.details(reports)
    if extra:
        print()
        print(extra)
    print(f"\n{sum(r.is_passed for r in reports)}/{len(reports)} passed in {wall_s} s")
    if args.json is not None:
        meta = {
            "wall_s": wall_s,
            "seed": args.seed,
            "scenarios_run": numbers,
            "python": platform.python_version(),
        }
        text.write_json(args.json, reports, **meta)
    return 0 if all(r.is_passed for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
