"""The chaos suite's cluster group in CI (see docs/chaos.md, "Chaos suites"): scenario 15,
a master ``kill -9`` with failover on a 3-master + 3-replica Redis Cluster with
``redis.replica_acks`` = 1, and scenario 16, a runtime SIGKILL on a 3-master cluster.

Each runs real processes (the redis-server nodes, `runtime serve` ×2 on the cluster URL)
and fails on any failed check of the scenario, as ``test_chaos_suite.py`` does for the
single-node scenarios; each is bounded in time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.proxy.testing import Target
from chaos.suite.runner import proxy_target, run_scenario
from chaos.suite.scenarios import CLUSTER_SUBSET, SCENARIOS

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    """A stage is built with a proxy target; the cluster scenarios create no proxy on it."""
    with proxy_target() as t:
        yield t


@pytest.mark.timeout(120)
@pytest.mark.parametrize("number", CLUSTER_SUBSET, ids=[SCENARIOS[n].title for n in CLUSTER_SUBSET])
async def test_cluster_scenario_loses_nothing(number: int, target: Target, tmp_path: Path) -> None:
    report = await run_scenario(SCENARIOS[number], tmp_path, target, seed=7)
    failed = [f"{c.name}: {c.detail}" for c in report.checks if not c.ok]
    figures = json.dumps(report.figures.to_json() if report.figures else None, default=str)
    assert report.is_passed, "\n".join([*failed, *report.notes, figures, report.logs])
    assert report.figures is not None
    assert report.figures.lost == 0
    assert report.figures.extra_starts <= report.figures.bound
    print(f"[{number}] {report.title}: {report.wall_s} s; " + "; ".join(report.notes))
