"""The autoscaling contract without Redis: the replica formula, the backlog reply's checks,
the drain's bound, and the example KEDA ScaledObjects in deploy/k8s against the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from runtime.function import FunctionOptions, FunctionSpec
from runtime.observe import rejects
from runtime.observe.metrics import Metrics
from runtime.queue.backlog import parse_backlog
from runtime.server.drain import DRAIN_MARGIN_S, describe, drain_grace_s
from runtime.server.openapi import COMMON_ERRORS
from runtime.server.scale import operation, replicas

K8S = Path(__file__).parents[2] / "deploy" / "k8s"


@pytest.mark.parametrize(
    ("demand", "slots", "target", "expected"),
    [
        (0, 16, 0.7, 0),  # nothing waits or runs: scale to the minimum
        (1, 16, 0.7, 1),
        (7, 2, 0.7, 5),
        (21, 2, 0.7, 15),  # 21 / (2 * 0.7) is 15.000000000000002 in floats: still 15
        (7, 2, 0.5, 7),
        (112, 16, 0.7, 10),
        (113, 16, 0.7, 11),
        (3, 1, 1.0, 3),
        (10, 4, 0.3, 9),  # 10 / 1.2 = 8.33
    ],
)
def test_replicas_is_the_ceiling_of_demand_over_busy_slots(
    demand: int, slots: int, target: float, expected: int
) -> None:
    assert replicas(demand, slots, target) == expected


def test_a_backlog_reply_parses_into_its_split() -> None:
    backlog = parse_backlog([10_000, 9, 2, 0, 3, 4, 7_500])
    assert backlog is not None
    assert backlog.ready == 9 and backlog.in_flight == 2
    assert backlog.held == {"breaker": 0, "max_in_flight": 3, "rate_limit": 4}
    assert backlog.schedulable == 2 and backlog.held_total == 7
    assert backlog.oldest_ready_age_s == 2.5
    empty = parse_backlog([10_000, 0, 0, 0, 0, 0, -1])
    assert empty is not None and empty.oldest_ready_ms is None and empty.oldest_ready_age_s == 0


@pytest.mark.parametrize(
    "reply",
    [
        None,
        b"OK",
        [1, 2, 3],
        [10_000, 9, 2, 0, 3, 4, 7_500, 8],
        [10_000, 9, 2, 0, 3, b"x", 7_500],
        [10_000, 9, -2, 0, 0, 0, 7_500],  # negative in flight
        [10_000, 5, 2, 3, 3, 0, 7_500],  # more held than ready
        [10_000, 9, 2, 0, 3, 4.5, 7_500],
    ],
)
def test_a_backlog_reply_that_does_not_parse_is_refused_and_counted(reply: object) -> None:
    before = rejects.REJECTED["backlog_reply"]
    assert parse_backlog(reply) is None
    assert rejects.REJECTED["backlog_reply"] == before + 1


def _spec(name: str, timeout_s: float) -> FunctionSpec:
    return FunctionSpec(name, print, FunctionOptions(timeout_s=timeout_s), int, False, False, "x")


def test_the_drain_waits_no_longer_than_the_longest_timeout_and_says_why() -> None:
    specs = [_spec("quick", 2), _spec("slow", 30)]
    assert drain_grace_s(600, specs) == 30 + DRAIN_MARGIN_S
    assert drain_grace_s(10, specs) == 10  # worker.shutdown_grace_s stays the cap
    assert drain_grace_s(10, []) == DRAIN_MARGIN_S
    assert describe(600, specs) == (
        "up to 31s (the longest timeout_s, 30s of slow, + 1s; worker.shutdown_grace_s is 600s)"
    )
    assert describe(10, specs) == (
        "up to 10s (worker.shutdown_grace_s; the longest timeout_s is 30s of slow)"
    )


def _documents(name: str) -> list[dict[str, Any]]:
    with (K8S / name).open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def _triggers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (scaled,) = [doc for doc in docs if doc["kind"] == "ScaledObject"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"]
    assert scaled["spec"]["minReplicaCount"] >= 1  # the runtime serves what KEDA reads
    triggers: list[dict[str, Any]] = scaled["spec"]["triggers"]
    return triggers


def test_the_metrics_api_example_reads_a_number_of_the_scale_answer() -> None:
    docs = _documents("keda-metrics-api.yaml")
    (trigger,) = _triggers(docs)
    assert trigger["type"] == "metrics-api"
    meta = trigger["metadata"]
    assert re.fullmatch(r"https?://[^/]+/v1/scale(\?target=0?\.\d+)?", meta["url"])
    assert meta["targetValue"] == "1"
    assert trigger.get("metricType", "AverageValue") == "AverageValue"  # ceil(value / 1)
    # valueLocation (GJSON) walks the documented answer to an integer
    schema = operation(COMMON_ERRORS)["responses"]["200"]["content"]["application/json"]["schema"]
    for part in meta["valueLocation"].split("."):
        schema = schema["properties"][part]
    assert schema["type"] == "integer"
    assert meta["authMode"] == "bearer"
    (auth,) = [doc for doc in docs if doc["kind"] == "TriggerAuthentication"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert [ref["parameter"] for ref in auth["spec"]["secretTargetRef"]] == ["token"]


def test_the_prometheus_example_queries_metrics_the_runtime_exports() -> None:
    (trigger,) = _triggers(_documents("keda-prometheus.yaml"))
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    exported = Metrics(["resize"]).exposition().decode()
    names = set(re.findall(r"([a-z_]+)\{", query)) - {"max"}
    assert names == {"queue_schedulable_backlog", "queue_in_flight_leases"}
    for name in names:
        assert f"# TYPE {name} gauge" in exported
    assert float(trigger["metadata"]["threshold"]) == pytest.approx(16 * 0.7)
