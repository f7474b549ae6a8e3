"""What one attempt of a no-op ``async def`` handler costs the worker, in µs, without Redis:

    PYTHONPATH=. .venv/bin/python benchmarks/attempt_cost.py [--jobs 20000] [--repeat 5]
        [--baseline REV]

Two figures, each for the code of this checkout ("new") and, in the same process, for
``runtime/execution/attempt.py``, ``runs.py``, ``gate.py`` and ``quarantine.py`` as they
were at git revision ``--baseline`` ("old", loaded from ``git show`` under other module
names; skipped when git cannot show them):

1. ``Attempts.run``: one attempt awaited in a loop inside one task (decode the envelope,
   build the context, run the handler under its timeout, classify the result), metrics on
   as in ``runtime serve``, tracing off.
2. A whole run: ``Runs.start`` for ``--jobs`` jobs, at most ``--concurrency`` at a time as
   a worker would, each outcome handed to a settler that only counts it: the task of the
   run, its quarantine turn, the attempt, the slot given back.

Each figure is the best of ``--repeat`` rounds (the machine is shared: the best round is
the one least disturbed). A one-off measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from runtime.execution.counters import WorkerCounters
from runtime.execution.held import HeldLeases
from runtime.function import function, inspect_handler
from runtime.jobs import envelope
from runtime.jobs.outcome import Completed, Outcome
from runtime.jobs.records import ClaimedJob
from runtime.observe.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "52725ff"  # main before issue 14's helper J: the handler in a task of its own


@function(concurrency=256, max_attempts=1)
async def noop(event: Any) -> None:
    return None


class CountingSettler:
    """The settler's face to a run: counts outcomes, wakes the benchmark at the last."""

    def __init__(self, expected: int, done: asyncio.Event) -> None:
        self.outcomes = 0
        self.completed = 0
        self._expected = expected
        self._done = done

    def outcome(self, job: ClaimedJob, outcome: Outcome) -> None:
        self.outcomes += 1
        self.completed += isinstance(outcome, Completed)
        if self.outcomes == self._expected:
            self._done.set()

    def release(self, job: ClaimedJob) -> None:
        raise AssertionError("nothing is released in this benchmark")


class NoBreaker:
    def record(self, lease: Any, outcome: Outcome) -> None:
        pass

    def cancelled(self, lease: Any) -> None:
        pass


class Path_(NamedTuple):
    """The modules of one code path."""

    attempt: types.ModuleType
    runs: types.ModuleType
    gate: types.ModuleType
    quarantine: types.ModuleType


def load_old(rev: str) -> Path_ | None:
    """The modules of the run path at ``rev``, as ``old_attempt``, ``old_runs``, ..."""
    modules = []
    for name in Path_._fields:
        path = f"runtime/execution/{name}.py"
        try:
            source = subprocess.run(
                ["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, check=True
            ).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"(no old figures: git cannot show {rev}:{path}: {exc})")
            return None
        spec = importlib.util.spec_from_loader(f"old_{name}", loader=None)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)
        modules.append(module)
    return Path_(*modules)


def make_jobs(count: int) -> list[ClaimedJob]:
    spec = inspect_handler(noop)
    payload = spec.encode({"n": 1})
    jobs = []
    for i in range(count):
        job_id = f"noop.{i}"
        env = envelope.encode(envelope.Envelope(1, job_id, "noop", payload))
        jobs.append(ClaimedJob(job_id, "1", env, 0, 0, 0))
    return jobs


def new_attempts(attempt_mod: types.ModuleType, metrics: Metrics, runs: Callable[[], Any]) -> Any:
    """Attempts of ``noop``; ``runs()`` is the Runs whose record they consult, if any."""
    options: dict[str, Any] = {}
    if "time_out" in inspect.signature(attempt_mod.Attempts).parameters:  # after 52725ff
        options["time_out"] = lambda lease: runs().time_out(lease)
        options["why_stopped"] = lambda lease: runs() and runs().why_stopped(lease)
    return attempt_mod.Attempts(
        inspect_handler(noop),
        max_envelope_bytes=1 << 20,
        extend_lease=_never,
        metrics=metrics.for_function("noop"),
        **options,
    )


async def _never(job: ClaimedJob) -> float:
    raise AssertionError("no lease to extend here")


async def attempt_us(attempt_mod: types.ModuleType, jobs: list[ClaimedJob]) -> float:
    attempts = new_attempts(attempt_mod, Metrics(["noop"]), lambda: None)
    started = time.perf_counter()
    for job in jobs:
        outcome = await attempts.run(job)
    elapsed = time.perf_counter() - started
    assert isinstance(outcome, Completed), outcome
    await attempts.close()
    return elapsed / len(jobs) * 1e6


async def run_us(code: Path_, jobs: list[ClaimedJob], room: int) -> float:
    metrics = Metrics(["noop"])
    done = asyncio.Event()
    slot_freed = asyncio.Event()
    settler = CountingSettler(len(jobs), done)
    gate = code.gate.QuarantineGate(
        "noop", code.quarantine.Quarantine(), None, max_recoveries=3, outages=None
    )
    runs: Any = None
    runs = code.runs.Runs(
        "noop",
        held=HeldLeases(),
        gate=gate,
        attempts=new_attempts(code.attempt, metrics, lambda: runs),
        breaker=NoBreaker(),
        settler=settler,
        counters=WorkerCounters(),
        metrics=metrics.for_function("noop"),
        is_traced=False,
        slot_freed=slot_freed.set,
    )
    started = time.perf_counter()
    for job in jobs:  # as the claim loop: start while a slot is free, else wait for one
        while runs.running >= room:
            slot_freed.clear()
            await slot_freed.wait()
        runs.start(job, 0)
    await asyncio.wait_for(done.wait(), 60)  # a run that failed never counts
    elapsed = time.perf_counter() - started
    assert settler.completed == len(jobs), settler.completed
    return elapsed / len(jobs) * 1e6


def best(rounds: int, measure: Callable[[], float]) -> float:
    return min(measure() for _ in range(rounds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the old code")
    args = parser.parse_args(argv)
    from runtime.execution import attempt, gate, quarantine, runs

    paths: dict[str, Path_] = {}
    old = load_old(args.baseline)
    if old is not None:
        paths[f"old ({args.baseline})"] = old
    paths["new (this checkout)"] = Path_(attempt, runs, gate, quarantine)
    jobs = make_jobs(args.jobs)
    print(f"python {sys.version.split()[0]}, {args.jobs} jobs, best of {args.repeat} rounds")
    for label, code in paths.items():
        one = best(args.repeat, lambda c=code: asyncio.run(attempt_us(c.attempt, jobs)))
        whole = best(args.repeat, lambda c=code: asyncio.run(run_us(c, jobs, args.concurrency)))
        print(f"{label:24} Attempts.run {one:6.1f} µs/attempt   whole run {whole:6.1f} µs/job")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
