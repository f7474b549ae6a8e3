"""``jobs_consumed``, ``jobs_completed`` and ``worker_active`` read from the workers' own
tallies (FunctionMetrics.follow): the same series, types and names a Counter and a Gauge
expose, and every worker of a function summed."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from runtime.observe.metrics import Metrics, Tallies


def families(m: Metrics) -> dict[str, tuple[str, dict[tuple[str, str], float]]]:
    out = {}
    for family in text_string_to_metric_families(m.exposition().decode()):
        samples = {(s.name, s.labels.get("function", "")): s.value for s in family.samples}
        out[family.name] = (family.type, samples)
    return out


def test_the_tallies_are_exposed_as_counters_and_a_gauge() -> None:
    m = Metrics(["f", "g"])
    counts = {"consumed": 3, "completed": 2, "active": 1}
    m.functions["f"].follow(
        Tallies(lambda: counts["consumed"], lambda: counts["completed"], lambda: counts["active"])
    )
    m.functions["f"].follow(Tallies(lambda: 10, lambda: 10, lambda: 0))  # a second worker
    got = families(m)
    assert got["jobs_consumed"][0] == got["jobs_completed"][0] == "counter"
    assert got["jobs_consumed"][1][("jobs_consumed_total", "f")] == 13
    assert got["jobs_consumed"][1][("jobs_consumed_total", "g")] == 0  # registered, idle
    assert got["jobs_consumed_created"][1][("jobs_consumed_created", "f")] > 0  # as a Counter
    assert got["jobs_completed"][1][("jobs_completed_total", "f")] == 12
    assert got["worker_active"] == ("gauge", {("worker_active", "f"): 1, ("worker_active", "g"): 0})
    counts.update(consumed=4, active=0)
    assert m.registry.get_sample_value("jobs_consumed_total", {"function": "f"}) == 14
    assert m.registry.get_sample_value("worker_active", {"function": "f"}) == 0


def test_a_function_added_by_a_deployment_is_counted_too() -> None:
    m = Metrics(["f"])
    m.for_function("late").follow(Tallies(lambda: 5, lambda: 4, lambda: 1))
    assert m.registry.get_sample_value("jobs_completed_total", {"function": "late"}) == 4
