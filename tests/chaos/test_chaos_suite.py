"""The chaos suite's CI subset, one test per scenario (see docs/chaos.md, "Chaos suites").

Each test runs a scenario on real processes (redis-server, `runtime serve` ×2, the proxy)
and fails on any failed check: a lost job, re-runs beyond the bound or unexplained, a
completion applied twice, a leftover, or the scenario's own checks. Figures about time are
checked with generous bounds inside the scenarios; counts are checked exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.proxy.testing import Target
from chaos.suite.runner import proxy_target, run_scenario
from chaos.suite.scenarios import CI_SUBSET, SCENARIOS

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    """chaos.proxy as a child process for the module, or the real Toxiproxy of TOXIPROXY_URL."""
    with proxy_target() as t:
        yield t


@pytest.mark.timeout(150)
@pytest.mark.parametrize("number", CI_SUBSET, ids=[SCENARIOS[n].title for n in CI_SUBSET])
async def test_scenario_loses_nothing(number: int, target: Target, tmp_path: Path) -> None:
    report = await run_scenario(SCENARIOS[number], tmp_path, target, seed=7)
    failed = [f"{c.name}: {c.detail}" for c in report.checks if not c.ok]
    figures = json.dumps(report.figures.to_json() if report.figures else None, default=str)
    assert report.is_passed, "\n".join([*failed, figures, report.logs])
    assert report.figures is not None
    assert report.figures.lost == 0
    assert report.figures.extra_starts <= report.figures.bound
