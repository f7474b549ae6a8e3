"""The witness: what the handlers really ran, recorded outside Redis.

Each handler appends ``start <job id> <attempt> <pid> <unix time>`` before its work and
``finish <job id> <attempt> <pid> <unix time>`` after it, with one ``write()`` on an
``O_APPEND`` descriptor: a line is never torn by a concurrent writer, and everything written
before a SIGKILL is still there. A start without a finish from the same pid is a run the
process did not live (or was not let) to finish.
"""

from __future__ import annotations

import collections
import textwrap
from dataclasses import dataclass
from pathlib import Path

HANDLERS = '''
    """Chaos-suite handlers: ``work`` and ``fragile`` sleep, ``poison`` kills its process."""

    import asyncio
    import os
    import time

    from runtime import Context, function

    WITNESS = {witness!r}


    def note(event: str, ctx: Context) -> None:
        line = f"{{event}} {{ctx.job_id}} {{ctx.attempt}} {{os.getpid()}} {{time.time():.6f}}\\n"
        fd = os.open(WITNESS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


    @function(concurrency={concurrency}, max_recoveries={max_recoveries}, timeout_s=30)
    async def work(seconds: float, ctx: Context) -> str:
        note("start", ctx)
        await asyncio.sleep(seconds)
        note("finish", ctx)
        return "ok"


    @function(concurrency={concurrency}, max_recoveries=0, timeout_s=30)
    async def fragile(seconds: float, ctx: Context) -> str:
        """Like work, for jobs that must not survive a worker's death (max_recoveries=0)."""
        note("start", ctx)
        await asyncio.sleep(seconds)
        note("finish", ctx)
        return "ok"


    @function(concurrency=1, max_recoveries={poison_recoveries})
    async def poison(seconds: float, ctx: Context) -> None:
        note("start", ctx)
        os._exit(17)
'''

WORK_CONCURRENCY = 8
WORK_MAX_RECOVERIES = 5  # a bystander may sit in several crashed runtimes; never DLQ it here
POISON_MAX_RECOVERIES = 2


def handler_source(witness: Path) -> str:
    return textwrap.dedent(
        HANDLERS.format(
            witness=str(witness),
            concurrency=WORK_CONCURRENCY,
            max_recoveries=WORK_MAX_RECOVERIES,
            poison_recoveries=POISON_MAX_RECOVERIES,
        )
    ).lstrip()


@dataclass(frozen=True, slots=True)
class Run:
    """One handler run: started by ``pid`` at ``start``; ``finish`` None if it never ended."""

    job: str
    pid: int
    start: float
    finish: float | None


class Witness:
    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self) -> list[tuple[str, str, int, float]]:
        """(event, job id, pid, time) in file order; a malformed line is skipped."""
        if not self.path.exists():
            return []
        out: list[tuple[str, str, int, float]] = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 5 or parts[0] not in ("start", "finish"):
                continue
            try:
                out.append((parts[0], parts[1], int(parts[3]), float(parts[4])))
            except ValueError:
                continue
        return out

    def runs(self) -> list[Run]:
        """Pair each start with the next finish of the same job by the same pid."""
        opened: dict[tuple[str, int], list[float]] = collections.defaultdict(list)
        runs: list[Run] = []
        for event, job, pid, at in self.events():
            if event == "start":
                opened[(job, pid)].append(at)
            elif opened[(job, pid)]:
                runs.append(Run(job, pid, opened[(job, pid)].pop(0), at))
        for (job, pid), starts in opened.items():
            runs.extend(Run(job, pid, at, None) for at in starts)
        return runs

    def starts(self) -> collections.Counter[str]:
        return collections.Counter(job for event, job, _, _ in self.events() if event == "start")

    def finishes(self) -> collections.Counter[str]:
        return collections.Counter(job for event, job, _, _ in self.events() if event == "finish")

    def running(self, pid: int) -> list[Run]:
        """Runs of ``pid`` started and not finished, as of now."""
        return [r for r in self.runs() if r.pid == pid and r.finish is None]
