"""A worker's runs of ``async def`` handlers, without Redis: the handler runs inline in its
run's task (no task, no loop round trip of its own), and the attempt still ends on the
runtime's terms: its timeout, a drain, a lost lease; a handler that ignores its
cancellation is abandoned after the stop grace (its job settled or released at once, its
quarantine turn given up), and its slot comes back only when it really ends.

Timings are shrunk (timeouts of 20 ms, a stop grace of 50 ms) and every wait is on a
condition, bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from runtime.execution import runs as runs_module
from runtime.execution.attempt import Attempts
from runtime.execution.counters import WorkerCounters
from runtime.execution.gate import QuarantineGate
from runtime.execution.held import HeldLeases, Lease
from runtime.execution.quarantine import Quarantine
from runtime.execution.runs import Runs
from runtime.function import function, inspect_handler
from runtime.jobs import envelope
from runtime.jobs.outcome import Completed, Failed, Outcome
from runtime.jobs.records import ClaimedJob

pytestmark = pytest.mark.timeout(10)

STOP_GRACE_S = 0.05


@dataclass
class Settled:
    """The settler's and the breaker's face to the runs: what each run ended with."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)
    cancelled: list[Lease] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def outcome(self, job: ClaimedJob, outcome: Outcome) -> None:
        self.outcomes[job.id] = outcome
        self.changed.set()

    def release(self, job: ClaimedJob) -> None:
        self.released.append(job.id)
        self.changed.set()

    def record(self, lease: Lease, outcome: Outcome) -> None:
        pass

    def record_cancelled(self, lease: Lease) -> None:
        self.cancelled.append(lease)
        self.changed.set()


class Breaker:
    def __init__(self, settled: Settled) -> None:
        self.record = settled.record
        self.cancelled = settled.record_cancelled


@dataclass
class Worker:
    runs: Runs
    held: HeldLeases
    quarantine: Quarantine
    settled: Settled
    counters: WorkerCounters
    attempted: list[Outcome | BaseException]  # what each Attempts.run ended with (its span's)

    def start(self, job: ClaimedJob) -> None:
        self.runs.start(job, 0)

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        async def check() -> None:
            while not predicate():
                self.settled.changed.clear()
                await self.settled.changed.wait()

        try:
            await asyncio.wait_for(check(), 5)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None


def make_worker(handler: Callable[..., Awaitable[Any]], **options: Any) -> Worker:
    spec = inspect_handler(function(**options)(handler))
    settled = Settled()
    held = HeldLeases()
    quarantine = Quarantine()
    counters = WorkerCounters()
    runs: Runs | None = None

    async def extend(job: ClaimedJob) -> float:
        return 30.0

    attempts = Attempts(
        spec,
        max_envelope_bytes=1 << 20,
        extend_lease=extend,
        time_out=lambda lease: runs.time_out(lease) if runs is not None else None,
        why_stopped=lambda lease: runs.why_stopped(lease) if runs is not None else None,
    )
    attempted: list[Outcome | BaseException] = []
    run_attempt = attempts.run

    async def recorded(job: ClaimedJob, queue_wait_ms: int = 0) -> Outcome:
        try:
            outcome = await run_attempt(job, queue_wait_ms)
        except BaseException as exc:
            attempted.append(exc)
            raise
        attempted.append(outcome)
        return outcome

    attempts.run = recorded  # type: ignore[method-assign]
    runs = Runs(
        spec.name,
        held=held,
        gate=QuarantineGate(spec.name, quarantine, None, max_recoveries=5, outages=None),  # type: ignore[arg-type]
        attempts=attempts,
        breaker=Breaker(settled),  # type: ignore[arg-type]
        settler=settled,  # type: ignore[arg-type]
        counters=counters,
        metrics=None,
        is_traced=False,
        slot_freed=settled.changed.set,
    )
    return Worker(runs, held, quarantine, settled, counters, attempted)


def job(name: str, n: int = 0, payload: Any = 0) -> ClaimedJob:
    job_id = f"{name}.{n}"
    env = envelope.Envelope(1, job_id, name, msgspec.msgpack.encode(payload))
    return ClaimedJob(job_id, "1", envelope.encode(env), 0, 0, 0)


@pytest.fixture(autouse=True)
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs_module, "STOP_GRACE_S", STOP_GRACE_S)


# -- no task and no loop round trip of its own -------------------------------------------


async def noop(x: int) -> int:
    return x + 1


async def test_an_attempt_whose_handler_never_suspends_never_yields_to_the_loop() -> None:
    attempts = Attempts(
        inspect_handler(function(noop)),
        max_envelope_bytes=1 << 20,
        extend_lease=lambda job: asyncio.sleep(0, 1.0),
        time_out=lambda lease: None,
        why_stopped=lambda lease: None,
    )
    step = attempts.run(job("noop", payload=41))
    with pytest.raises(StopIteration) as stopped:
        step.send(None)  # one step, in this task: done without waiting on anything
    assert stopped.value.value == Completed(b"42")


async def test_a_run_of_a_handler_that_never_suspends_ends_in_its_first_step() -> None:
    w = make_worker(noop)
    w.start(job("noop", payload=1))
    assert w.runs.running == 1
    await asyncio.sleep(0)  # the run's task takes its first step, once
    assert w.settled.outcomes == {"noop.0": Completed(b"2")}
    assert w.runs.running == 0


async def test_the_handler_runs_in_its_runs_task_in_a_context_of_the_run() -> None:
    seen: list[asyncio.Task[Any] | None] = []

    async def where(x: int) -> None:
        seen.append(asyncio.current_task())
        await asyncio.sleep(0)

    w = make_worker(where)
    w.start(job("where", 1))
    w.start(job("where", 2))
    await w.until(lambda: len(w.settled.outcomes) == 2, "both runs")
    assert len(set(seen)) == 2 and asyncio.current_task() not in seen


# -- the runtime's terms -------------------------------------------------------------------


async def test_a_timeout_cancels_the_handler_and_fails_the_attempt() -> None:
    cancelled = asyncio.Event()

    async def slow(x: int) -> None:
        try:
            await asyncio.sleep(30)
        finally:
            cancelled.set()

    w = make_worker(slow, timeout_s=0.02)
    w.start(job("slow"))
    await w.until(lambda: "slow.0" in w.settled.outcomes, "the timeout")
    assert w.settled.outcomes["slow.0"] == Failed("timeout", "attempt timed out")
    assert cancelled.is_set() and w.runs.running == 0
    assert w.attempted == [Failed("timeout", "attempt timed out")]  # as its span says


async def test_a_handler_that_returns_after_swallowing_its_timeout_still_timed_out() -> None:
    async def swallower(x: int) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "swallowed"
        return "slept"

    w = make_worker(swallower, timeout_s=0.02)
    w.start(job("swallower"))
    await w.until(lambda: w.runs.running == 0, "the run's end")
    assert w.settled.outcomes == {"swallower.0": Failed("timeout", "attempt timed out")}
    assert w.attempted == [Failed("timeout", "attempt timed out")]


@pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit, GeneratorExit])
async def test_a_base_exception_from_the_handler_is_its_outcome(kind: type) -> None:
    async def boom(x: int) -> None:
        await asyncio.sleep(0)
        raise kind()

    w = make_worker(boom)
    w.start(job("boom"))
    await w.until(lambda: "boom.0" in w.settled.outcomes, "the outcome")
    outcome = w.settled.outcomes["boom.0"]
    assert isinstance(outcome, Failed) and outcome.reason == "handler_error"
    assert kind.__name__ in outcome.error and w.runs.running == 0


async def test_a_handler_cancelling_its_own_task_is_a_handler_error() -> None:
    async def cancels_itself(x: int) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(1)

    w = make_worker(cancels_itself)
    w.start(job("cancels_itself"))
    await w.until(lambda: w.runs.running == 0, "the run's end")
    outcome = w.settled.outcomes["cancels_itself.0"]
    assert isinstance(outcome, Failed) and outcome.reason == "handler_error"
    assert "CancelledError" in outcome.error


def obstinate_handler(
    proceed: asyncio.Event, cancellations: list[int]
) -> Callable[[int], Awaitable[str]]:
    """A handler that swallows every cancellation until ``proceed`` is set."""

    async def obstinate(x: int) -> str:
        while not proceed.is_set():
            try:
                await proceed.wait()
            except asyncio.CancelledError:
                cancellations.append(1)
        return "finished anyway"

    return obstinate


async def test_a_timed_out_handler_ignoring_its_cancellation_is_abandoned() -> None:
    proceed, cancellations = asyncio.Event(), []
    w = make_worker(obstinate_handler(proceed, cancellations), timeout_s=0.02, concurrency=1)
    w.start(job("obstinate"))
    await w.until(lambda: "obstinate.0" in w.settled.outcomes, "the timeout")
    assert w.settled.outcomes["obstinate.0"] == Failed("timeout", "attempt timed out")
    assert cancellations == [1]
    # Its quarantine turn is given up (a suspect may run), its slot is not.
    assert w.runs.running == 1
    assert w.quarantine._shared == 0
    await asyncio.wait_for(w.quarantine.enter(is_suspect=True), 1)
    w.quarantine.leave(is_suspect=True)
    proceed.set()
    await w.until(lambda: w.runs.running == 0, "the slot back")
    assert w.settled.outcomes["obstinate.0"] == Failed("timeout", "attempt timed out")


async def test_a_drain_releases_a_handler_ignoring_its_cancellation() -> None:
    proceed, cancellations = asyncio.Event(), []
    w = make_worker(obstinate_handler(proceed, cancellations), timeout_s=60)
    w.start(job("obstinate"))
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(w.runs.drain(0.01), 3)
    assert loop.time() - started < 2  # the grace, then the stop grace; not the handler
    assert w.settled.released == ["obstinate.0"] and w.settled.outcomes == {}
    assert w.counters.released == 1 and w.runs.running == 1
    w.runs.close()  # cancelled once more: this one ignores that too
    proceed.set()
    await w.until(lambda: w.runs.running == 0, "the slot back")
    assert w.settled.outcomes == {} and w.settled.released == ["obstinate.0"]


async def test_a_drained_attempt_ends_cancelled_without_an_outcome() -> None:
    async def slow(x: int) -> None:
        await asyncio.sleep(30)

    w = make_worker(slow)
    w.start(job("slow"))
    await asyncio.sleep(0)
    await asyncio.wait_for(w.runs.drain(0.01), 3)
    assert w.settled.released == ["slow.0"] and w.runs.running == 0
    assert len(w.attempted) == 1 and isinstance(w.attempted[0], asyncio.CancelledError)


async def test_a_drain_waits_for_runs_that_end_within_the_grace() -> None:
    async def quick(x: int) -> int:
        await asyncio.sleep(0.01)
        return x

    w = make_worker(quick)
    for n in range(3):
        w.start(job("quick", n, payload=n))
    await asyncio.wait_for(w.runs.drain(5), 3)
    assert len(w.settled.outcomes) == 3 and w.settled.released == []


async def test_a_lost_lease_stops_the_run_and_settles_nothing() -> None:
    proceed, cancellations = asyncio.Event(), []
    w = make_worker(obstinate_handler(proceed, cancellations), timeout_s=60)
    lost = job("obstinate")
    w.start(lost)
    await asyncio.sleep(0)
    w.runs.lose((lost.id, lost.token))
    await w.until(lambda: bool(w.settled.cancelled), "the run given up")
    assert w.settled.cancelled == [(lost.id, lost.token)]
    assert w.counters.leases_lost == 1 and not w.held
    assert w.runs.running == 1  # until the handler really ends
    proceed.set()
    await w.until(lambda: w.runs.running == 0, "the slot back")
    assert w.settled.outcomes == {} and w.settled.released == []


async def test_a_newer_lease_on_the_same_job_supersedes_the_older_run() -> None:
    proceed, cancellations = asyncio.Event(), []
    w = make_worker(obstinate_handler(proceed, cancellations), timeout_s=60)
    old = job("obstinate")
    w.start(old)
    await asyncio.sleep(0)
    newer = ClaimedJob(old.id, "2", old.envelope, 0, 0, 0)
    w.start(newer)
    await w.until(lambda: bool(w.settled.cancelled), "the old run given up")
    assert w.settled.cancelled == [(old.id, "1")] and w.held.pairs() == [(old.id, "2")]
    proceed.set()
    await w.until(lambda: w.runs.running == 0, "both runs' end")
    assert w.settled.outcomes == {old.id: Completed(b'"finished anyway"')}
