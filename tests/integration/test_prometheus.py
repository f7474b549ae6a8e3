"""deploy/prometheus and deploy/grafana against real tools: promtool checks and unit-tests
the rules, then a real Prometheus scrapes a live ``runtime serve`` under load (the example
functions, failing ones included) and every rule expression, every series an alert reads
and every dashboard query must return series through its HTTP API. A wrong metric name or
label returns nothing, and fails here.

Skipped, with the reason, where Debian's ``prometheus`` package is not installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from runtime.queue.keys import wake_channel
from tests.conftest import free_port
from tests.integration.prometheus_child import (
    DEPLOY,
    MISSING,
    PROMETHEUS,
    PROMTOOL,
    Prometheus,
    dashboard_queries,
    rules,
    selectors,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PROMTOOL is None or PROMETHEUS is None, reason=MISSING),
]

RULES = DEPLOY / "prometheus"
TOKEN = "prometheus-test-token"
# Series that exist only once something went wrong (a family with no sample until then):
# an empty answer is accepted for them when /metrics declares the family.
SPARSE = ("runtime_task_failures_total",)
# Beside the example functions: a breaker that opens and a rate limit that makes waits.
EXTRAS = """
    from runtime import Breaker, function

    @function(max_attempts=1, breaker=Breaker(min_samples=2, window_s=30, cooldown_s=60))
    async def fragile(x: int) -> int:
        raise RuntimeError("always fails")

    @function(rate_limit="5/s")
    async def gated(x: int) -> int:
        return x
"""


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=RULES, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.timeout(60)
def test_promtool_checks_the_rules_and_the_config() -> None:
    checked = _promtool("check", "rules", "recording.yml", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = _promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


@pytest.mark.timeout(60)
def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    tested = _promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    cases = (RULES / "alerts.test.yml").read_text()
    for rule in rules():
        if "alert" in rule:
            name = rule["alert"]
            assert f"alertname: {name}\n        exp_alerts:\n          - exp_labels" in cases, name
            assert f"alertname: {name}\n        exp_alerts: []" in cases, name


def test_selectors_are_read_out_of_promql() -> None:
    expr = (
        'sum by (function, le) (rate(x_bucket{function="a", le=~"2|2.0"}[5m])) / 1e3'
        " and on (instance) absent(up == 1) or vector(0) > 14.4 * slo:a:rate1h"
    )
    assert selectors(expr) == {'x_bucket{function="a", le=~"2|2.0"}', "up", "slo:a:rate1h"}


def _call(port: int, method: str, path: str, body: object = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def serve(tmp_path: Path, redis_url: str) -> Iterator[int]:
    """A live ``runtime serve`` of the example functions (and EXTRAS); its port."""
    functions = tmp_path / "functions"
    shutil.copytree(DEPLOY.parent / "functions", functions)
    (functions / "extras.py").write_text(textwrap.dedent(EXTRAS))
    files = tmp_path / "files"
    files.mkdir()
    for i in range(3):
        (files / f"{i}.txt").write_text("a few words\n" * (i + 1))
    config = tmp_path / "config"
    config.mkdir()
    (config / "settings.toml").write_text(f'[params.file_stats]\nroot = "{files}"\n')
    port = free_port()
    env = {
        **os.environ, "RUNTIME_CONFIG_DIR": str(config), "RUNTIME_HTTP__TOKEN": TOKEN,
        "RUNTIME_METRICS__REFRESH_S": "0.5", "RUNTIME_WORKER__SHUTDOWN_GRACE_S": "2",
        # One /v1 request at a time, so that _load can make a real 503 (overloaded).
        "RUNTIME_HTTP__MAX_CONCURRENT_REQUESTS": "1",
    }  # fmt: skip
    with (tmp_path / "serve.log").open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "runtime.cli.main", "serve", "--port", str(port),
             "--redis", redis_url, "--functions", str(functions)],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.05)
        yield port
    finally:
        process.kill()
        process.wait(timeout=10)


def _load(port: int, redis_url: str) -> None:
    """Jobs of every kind: completed, retried, rejected, timed out, breaker-failed,
    rate-limited, through /jobs and /invoke; a 503 and a malformed wake message."""
    jobs = "/v1/functions/{}/jobs"
    for i in range(10):
        assert _call(port, "POST", jobs.format("hello"), {"name": f"n{i}"}) == 202
    assert _call(port, "POST", "/v1/functions/hello/invoke", {"name": "x"}) == 200
    for i in range(3):
        assert _call(port, "POST", jobs.format("file_stats"), {"path": f"{i}.txt"}) == 202
    assert _call(port, "POST", jobs.format("file_stats"), {"path": "../../etc/passwd"}) == 202
    assert _call(port, "POST", jobs.format("flaky"), {"failures": 1}) == 202
    assert _call(port, "POST", jobs.format("slow"), {"seconds": 5}) == 202
    for i in range(4):
        assert _call(port, "POST", jobs.format("fragile"), i) == 202
    for i in range(6):
        assert _call(port, "POST", jobs.format("gated"), i) == 202
    assert _call(port, "GET", "/v1/jobs/hello.unknown") == 404

    # A 503 for the availability SLI: a request while the only slot is held by an invoke.
    def hold() -> None:  # until it got the slot: it may itself meet a probe's request there
        for _ in range(100):
            if _call(port, "POST", "/v1/functions/slow/invoke", {"seconds": 1.5}) != 503:
                return

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        deadline = time.monotonic() + 10
        while _call(port, "POST", jobs.format("hello"), {"name": "o"}) != 503:
            assert time.monotonic() < deadline, "no 503 while the only slot was held"
    finally:
        holder.join(timeout=15)
    with redis.Redis.from_url(redis_url) as client:  # not UTF-8: skipped and counted
        client.publish(wake_channel("rt"), b"\xff\xfe")


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_every_rule_and_dashboard_query_returns_series(
    tmp_path: Path, serve: int, redis_url: str
) -> None:
    prometheus = Prometheus(
        tmp_path / "prometheus",
        [f"127.0.0.1:{serve}"],
        [RULES / "recording.yml", RULES / "alerts.yml"],
    )
    try:
        prometheus.wait_ready()
        _load(serve, redis_url)
        queries: dict[str, str] = {}  # query -> where it comes from
        for rule in rules():
            if "record" in rule:
                queries[rule["expr"]] = f"recording rule {rule['record']}"
                queries[rule["record"]] = f"the series recorded by {rule['record']}"
            name = rule.get("alert") or rule.get("record")
            for selector in selectors(rule["expr"]):
                queries.setdefault(selector, f"a series read by {name}")
        for where, expr in dashboard_queries():
            queries.setdefault(expr, where)
            for selector in selectors(expr):
                queries.setdefault(selector, f"a series read by {where}")
        with urllib.request.urlopen(f"http://127.0.0.1:{serve}/metrics", timeout=5) as r:
            declared = r.read().decode()
        # Until every query answers (or the deadline): the slow job dead-letters after
        # two 2 s timeouts, and rules need two scrapes before a rate has a value.
        deadline = time.monotonic() + 45
        while True:
            empty = {q: where for q, where in queries.items() if prometheus.series(q) == 0}
            unexplained = {
                q: where for q, where in empty.items()
                if not any(name in q and f"# TYPE {name} counter" in declared for name in SPARSE)
            }  # fmt: skip
            if not unexplained or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert not unexplained, json.dumps(unexplained, indent=1)
        assert len(queries) > 60  # all of them were asked
        assert prometheus.series('up{job="runtime"} == 1') == 1
        assert prometheus.series('jobs_dead_letter_total{reason="timeout"}') == 1
    finally:
        prometheus.stop()
