"""Prometheus metrics, in a registry owned by the app (never the global default one).

Labels are bounded: ``function`` takes only registered names, ``reason`` only the DLQ
vocabulary (or, on ``queue_held_backlog``, the three limits), ``state`` only the queue
states. Hot-path calls use label children bound once
per function, so counting a job costs a few attribute lookups.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from runtime.observe import rejects, supervisor

__all__ = ["CONTENT_TYPE_LATEST", "FunctionMetrics", "Metrics", "Tallies"]

# Seconds: from a 5 ms handler to a minute-long one. 2 is the latency objective of
# docs/slos.md ("p95 < 2 s"): a ratio SLI needs a bucket boundary at its threshold.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 2.5, 5, 10, 30, 60,
)  # fmt: skip
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 1800)
QUEUE_STATES = ("ready_high", "ready_default", "ready_low", "delayed", "in_flight", "dead")


class Tallies(NamedTuple):
    """Readers of a worker's own counts (FunctionMetrics.follow)."""

    consumed: Callable[[], int]
    completed: Callable[[], int]
    active: Callable[[], int]


class FunctionMetrics:
    """The children of one function's series, bound once."""

    def __init__(self, m: Metrics, function: str) -> None:
        self.produced = m.produced.labels(function)
        self.retried = m.retried.labels(function)
        self.duration = m.duration.labels(function)
        self.queue_wait = m.queue_wait.labels(function)
        self.active = m.active.labels(function)
        self.rate_limit_hits = m.rate_limit_hits.labels(function)
        self.handoff_started = m.handoffs.labels(function, "started")
        self.handoff_released = m.handoffs.labels(function, "released")
        self.handoff_adopted = m.handoffs.labels(function, "adopted")
        self.breaker_state = m.breaker_state.labels(function)
        self._failed = m.failed
        self._dead = m.dead
        self._function = function
        self._tallies: list[Tallies] = []
        self.created = time.time()  # the counters' _created sample, as a Counter has it

    def follow(self, tallies: Tallies) -> None:
        """Take ``jobs_consumed``, ``jobs_completed`` and ``worker_active`` from a worker's
        own tallies, read when the metrics are collected, instead of once per job: a tally
        is a plain integer, a Prometheus series takes a lock per call."""
        self._tallies.append(tallies)
        self.active.set_function(lambda: sum(t.active() for t in self._tallies))

    def consumed(self) -> int:
        return sum(t.consumed() for t in self._tallies)

    def completed(self) -> int:
        return sum(t.completed() for t in self._tallies)

    def failed(self, reason: str) -> None:
        self._failed.labels(self._function, reason).inc()

    def dead(self, reason: str) -> None:
        self._dead.labels(self._function, reason).inc()


class Metrics:
    def __init__(self, functions: Iterable[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        fn = ["function"]
        self.produced = Counter("jobs_produced", "Jobs enqueued by this instance", fn, registry=r)
        self.failed = Counter(
            "jobs_failed", "Failed attempts, by reason", [*fn, "reason"], registry=r
        )
        self.retried = Counter("jobs_retried", "Attempts scheduled again", fn, registry=r)
        self.dead = Counter(
            "jobs_dead_letter", "Jobs dead-lettered, by reason", [*fn, "reason"], registry=r
        )
        self.duration = Histogram(
            "job_processing_duration_seconds",
            "Handler time of one attempt",
            fn,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "job_queue_wait_seconds",
            "Time from enqueue (or due time) to claim",
            fn,
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.queue_length = Gauge(
            "queue_length", "Jobs per function and state (Redis)", [*fn, "state"], registry=r
        )
        self.active = Gauge("worker_active", "Jobs running in this instance", fn, registry=r)
        self.instances = Gauge(
            "runtime_instances", "Live runtime instances seen in the fleet registry", registry=r
        )
        self.redis_latency = Histogram(
            "redis_roundtrip_seconds",
            "Round trip of a Redis PING",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            registry=r,
        )
        self.redis_up = Gauge("redis_up", "1 when the last Redis check answered", registry=r)
        self.redis_eviction_policy_ok = Gauge(
            "redis_eviction_policy_ok",
            "1 when Redis' maxmemory-policy is noeviction, 0 when Redis may evict jobs, -1 unread",
            registry=r,
        )
        self.redis_data_loss = Counter(
            "redis_data_loss",
            "Times Redis was found to have lost its data (restarted empty or flushed)",
            registry=r,
        )
        self.stale_acks = Gauge(
            "jobs_stale_acks", "Outcomes refused by fencing (fleet total, Redis)", fn, registry=r
        )
        self.rate_limit_hits = Counter(
            "rate_limit_hits",
            "Claims cut short by the function's rate limit (the worker then waited)",
            fn,
            registry=r,
        )
        self.handoffs = Counter(
            "jobs_handed_over",
            "Jobs enqueue leased straight to an idle worker of this instance, by outcome: "
            "started, released (no slot, late, stopping) or adopted (message lost)",
            [*fn, "outcome"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "circuit_breaker_state",
            "This instance's circuit breaker: 0 closed, 1 open, 2 half-open",
            fn,
            registry=r,
        )
        self._autoscaling(fn)
        # route: the matched template ("/v1/jobs/{job_id}") or "unmatched"; method: the
        # HTTP verbs or "other"; so no value a client sends becomes a label.
        self.http_requests = Counter(
            "http_requests",
            "HTTP answers, by route template, method and status code",
            ["route", "method", "code"],
            registry=r,
        )
        r.register(_ProcessTallies())
        self.functions = {name: FunctionMetrics(self, name) for name in functions}
        r.register(_WorkerTallies(self.functions))

    def _autoscaling(self, fn: list[str]) -> None:
        """What an autoscaler needs and only the runtime knows (docs/metrics.md)."""
        r = self.registry
        self.schedulable = Gauge(
            "queue_schedulable_backlog",
            "Ready jobs no limit holds back: they start as soon as a slot is free (Redis)",
            fn,
            registry=r,
        )
        self.held = Gauge(
            "queue_held_backlog",
            "Ready jobs a limit keeps from starting now, by limit: rate_limit, "
            "max_in_flight (the fleet cap) or breaker (an open circuit breaker) (Redis)",
            [*fn, "reason"],
            registry=r,
        )
        self.in_flight = Gauge(
            "queue_in_flight_leases", "Jobs running fleet-wide: live leases (Redis)", fn, registry=r
        )
        self.slots = Gauge(
            "worker_slots", "Jobs this instance runs at once (its concurrency)", fn, registry=r
        )
        self.oldest_ready_age = Gauge(
            "queue_oldest_ready_age_seconds",
            "Seconds since the oldest ready job became ready, on Redis's clock (0: none)",
            fn,
            registry=r,
        )

    def set_backlog(
        self,
        function: str,
        *,
        schedulable: int,
        held: Iterable[tuple[str, int]],
        in_flight: int,
        slots: int,
        oldest_ready_age_s: float,
    ) -> None:
        self.schedulable.labels(function).set(schedulable)
        for reason, n in held:
            self.held.labels(function, reason).set(n)
        self.in_flight.labels(function).set(in_flight)
        self.slots.labels(function).set(slots)
        self.oldest_ready_age.labels(function).set(oldest_ready_age_s)

    def for_function(self, function: str) -> FunctionMetrics:
        # A deployment can add functions after start-up; still only registered names.
        if function not in self.functions:
            self.functions[function] = FunctionMetrics(self, function)
        return self.functions[function]

    def set_queue(self, function: str, stats: dict[str, int]) -> None:
        for state in QUEUE_STATES:
            self.queue_length.labels(function, state).set(stats.get(state, 0))
        self.stale_acks.labels(function).set(stats.get("stale_acks", 0))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _WorkerTallies(Collector):
    """``jobs_consumed`` and ``jobs_completed`` of each function, read from its workers' own
    tallies when collected (FunctionMetrics.follow); the same series a Counter gives."""

    def __init__(self, functions: dict[str, FunctionMetrics]) -> None:
        self._functions = functions

    def collect(self) -> Iterable[CounterMetricFamily]:
        consumed = CounterMetricFamily(
            "jobs_consumed", "Jobs claimed by this instance", labels=["function"]
        )
        completed = CounterMetricFamily("jobs_completed", "Jobs completed", labels=["function"])
        for name, f in list(self._functions.items()):
            consumed.add_metric([name], f.consumed(), created=f.created)
            completed.add_metric([name], f.completed(), created=f.created)
        return [consumed, completed]


class _ProcessTallies(Collector):
    """Process-wide tallies kept outside the registry: refused inputs (rejects.py) and
    failures of supervised tasks (supervisor.py)."""

    def collect(self) -> Iterable[CounterMetricFamily]:
        refused = CounterMetricFamily(
            "runtime_inputs_rejected",
            "Malformed inputs skipped (pub/sub messages, Redis replies, pointers), by source",
            labels=["source"],
        )
        for source, n in sorted(rejects.REJECTED.items()):
            refused.add_metric([source], n)
        failed = CounterMetricFamily(
            "runtime_task_failures",
            "Failures of supervised background tasks (each restarted), by task kind",
            labels=["task"],
        )
        for kind, n in sorted(supervisor.FAILURES.items()):
            failed.add_metric([kind], n)
        return [refused, failed]
