"""Runs scenarios one after the other, each on a fresh stage, against one proxy server:
``chaos.proxy`` started as a child process, or the real Toxiproxy of ``TOXIPROXY_URL``."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from chaos.proxy.testing import Target, real_target_from_env, server_process
from chaos.suite.report import ScenarioReport
from chaos.suite.scenarios import SCENARIOS, Scenario

LOG_TAIL_LINES = 12


@contextlib.contextmanager
def proxy_target() -> Iterator[Target]:
    real = real_target_from_env()
    if real is not None:
        yield real
        return
    with server_process() as url:
        yield Target("chaos", url)


async def run_scenario(scenario: Scenario, root: Path, target: Target, seed: int) -> ScenarioReport:
    began = time.monotonic()
    rng = random.Random(seed * 100 + scenario.number)  # noqa: S311 — a seeded scenario must be replayable, not secret
    stage = scenario.stage(scenario.number, root, target, rng)
    report = ScenarioReport(
        scenario.number, scenario.title, scenario.proves, 0.0, None, known_gap=scenario.known_gap
    )
    try:
        await asyncio.wait_for(scenario.run(stage), scenario.budget_s)
        report.figures = await stage.finish()
    except Exception as exc:  # the scenario failed; its report says how
        stage.check("the scenario ran to its end", False, f"{type(exc).__name__}: {exc}")
    finally:
        try:
            await stage.close()
        finally:
            report.wall_s = round(time.monotonic() - began, 1)
            report.checks, report.notes = stage.checks, stage.notes
    if not report.is_passed:
        report.logs = "\n".join(stage.fleet.tail(r, LOG_TAIL_LINES) for r in stage.fleet.everyone)
    return report


async def run_suite(
    numbers: Sequence[int],
    *,
    seed: int = 7,
    keep_dir: Path | None = None,
    on_report: Callable[[ScenarioReport], None] = lambda _: None,
) -> list[ScenarioReport]:
    """Run the scenarios in order; temp folders are removed unless ``keep_dir`` is given."""
    root = Path(tempfile.mkdtemp(prefix="chaos-suite-", dir=keep_dir))
    reports = []
    try:
        with proxy_target() as target:
            for number in numbers:
                report = await run_scenario(SCENARIOS[number], root, target, seed)
                reports.append(report)
                on_report(report)
    finally:
        if keep_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return reports
