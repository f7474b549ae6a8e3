"""One attempt of a job: decode its envelope, run its handler on the function's executor
within ``timeout_s``, and classify what happened as an Outcome. Measured (worker_active,
the duration histogram) and traced (a CONSUMER span per attempt when tracing is on).

Executors: ``async def`` handlers run inline, in the task of their run (runs.py), with no
task or loop round trip of their own: a handler that never suspends completes in its run's
first step. Their timeout is a timer that asks the run's owner to stop the run
(``time_out``); the owner records why before it cancels the task, and gives up on a
handler that ignores its cancellation (runs.py). Plain ``def`` handlers run in this
function's thread pool and are abandoned on timeout; a thread keeps its slot until it
really ends (see ``threads_running``), never its lease. ``executor="process"`` handlers
run in a killable subprocess pool.

Whatever a handler raises is an outcome, on every executor: any ``BaseException``
(``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``, a ``CancelledError``, custom
ones) fails the attempt as ``handler_error``. It is caught where the handler is awaited,
so not even a KeyboardInterrupt or a SystemExit reaches the task's step (which would
re-raise it out of the event loop). Whether the runtime ended the attempt (its
timeout, a drain, a lost lease) is the run's record, never the exception's type.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
from opentelemetry.trace import Status, StatusCode, get_current_span

from runtime.context import Context
from runtime.execution.held import Lease
from runtime.execution.process_pool import ChildCrashed, ProcessPool
from runtime.execution.progress import ProgressReporter
from runtime.function import FunctionSpec
from runtime.jobs import envelope
from runtime.jobs.outcome import (
    Completed,
    Crashed,
    DeadLetter,
    Failed,
    Outcome,
    classify,
    handler_raised,
)
from runtime.jobs.records import ClaimedJob
from runtime.observe.metrics import FunctionMetrics
from runtime.observe.tracing import Tracing

_json = msgspec.json.Encoder()


class Attempts:
    """Runs attempts of one function's jobs; owns its thread or process pool."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        max_envelope_bytes: int,
        extend_lease: Callable[[ClaimedJob], Awaitable[float]],
        time_out: Callable[[Lease], None],
        why_stopped: Callable[[Lease], str | None],
        write_progress: Callable[[ClaimedJob, bytes], Awaitable[bool]] | None = None,
        params: Mapping[str, Any] | None = None,
        metrics: FunctionMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.spec = spec
        self._name = spec.name
        self._max_envelope_bytes = max_envelope_bytes
        self._extend_lease = extend_lease
        self._time_out = time_out  # stops the run of an async handler past its timeout
        self._why_stopped = why_stopped  # why the runtime stopped that run, if it did
        self._write_progress = write_progress  # the job's progress, fenced by its token
        # lease -> its handler's ctx.cancelled, while a handler that takes a Context runs
        self._cancel_flags: dict[Lease, threading.Event] = {}
        self._params = params or {}
        self._metrics = metrics
        self.active = 0  # attempts running now (worker_active)
        self._tracing = tracing or Tracing()
        self._handler_log = logging.getLogger(f"runtime.handler.{spec.name}")  # Context.logger
        # lease -> its thread, while a thread handler runs (or runs on, abandoned)
        self.threads_running: dict[Lease, asyncio.Future[Any]] = {}
        self._threads: ThreadPoolExecutor | None = None
        self._processes: ProcessPool | None = None
        if spec.executor == "thread":
            self._threads = ThreadPoolExecutor(
                max_workers=spec.options.concurrency, thread_name_prefix=f"fn-{spec.name}"
            )
        elif spec.executor == "process":
            self._processes = ProcessPool(spec.options.concurrency)

    async def close(self) -> None:
        """Stop the pools: process children are killed, threads are left to end."""
        if self._processes is not None:
            await self._processes.close()
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)

    async def run(self, job: ClaimedJob, queue_wait_ms: int = 0) -> Outcome:
        """Decode the envelope, then run one attempt inside its span, measured."""
        try:
            env = envelope.decode(job.envelope, self._max_envelope_bytes)
        except envelope.EnvelopeError as exc:
            return DeadLetter("decode_error", str(exc), is_attempt=False)
        if env.function != self._name:
            return DeadLetter(
                "unknown_function",
                f"the envelope names function {env.function!r}, which is not registered "
                f"in this queue ({self._name!r})",
                is_attempt=False,
            )
        if not self._tracing.enabled:  # the common case: no span machinery per job
            return await self._measured(job, env)
        attributes = {
            "runtime.function": self._name,
            "runtime.job_id": job.id,
            "runtime.attempt": job.attempts + 1,
            "runtime.recoveries": job.recoveries,
            "runtime.queue_wait_ms": queue_wait_ms,
        }
        with self._tracing.process_span(self._name, env.trace, attributes) as span:
            outcome = await self._measured(job, env)
            if span.is_recording():
                span.set_attribute("runtime.outcome", _outcome_name(outcome))
                if not isinstance(outcome, Completed):
                    span.set_status(Status(StatusCode.ERROR, _outcome_error(outcome)[:200]))
        return outcome

    async def _measured(self, job: ClaimedJob, env: envelope.Envelope) -> Outcome:
        """One attempt, counted in worker_active and timed in the duration histogram."""
        m = self._metrics
        started = time.perf_counter()
        self.active += 1  # worker_active follows it (Worker)
        try:
            return await self._execute(job, env)
        finally:
            self.active -= 1
            if m is not None:
                m.duration.observe(time.perf_counter() - started)

    async def _execute(self, job: ClaimedJob, env: envelope.Envelope) -> Outcome:
        spec = self.spec
        try:
            payload = spec.decode(env.payload)
        except Exception as exc:
            return classify(exc)
        if self._processes is not None:
            return await self._in_process(job, env)
        if not spec.takes_context:
            return await self._run_handler(job, (payload,))
        lease = (job.id, job.token)
        flag = self._cancel_flags[lease] = threading.Event()
        reporter = self._reporter(job)
        try:
            return await self._run_handler(job, (payload, self._context(job, flag, reporter)))
        finally:
            self._cancel_flags.pop(lease, None)
            if reporter is not None:
                reporter.close()

    async def _run_handler(self, job: ClaimedJob, args: tuple[Any, ...]) -> Outcome:
        if self._threads is None:
            return await self._on_loop(job, args)
        return await self._in_thread(job, args)

    def flag_cancelled(self, lease: Lease) -> None:
        """Set ``ctx.cancelled`` of the handler running ``lease``, if it has a Context."""
        flag = self._cancel_flags.get(lease)
        if flag is not None:
            flag.set()

    def _reporter(self, job: ClaimedJob) -> ProgressReporter | None:
        write = self._write_progress
        if write is None:
            return None
        return ProgressReporter(lambda value: write(job, value))

    def _context(
        self, job: ClaimedJob, cancelled: threading.Event, reporter: ProgressReporter | None
    ) -> Context:
        """The handler's Context (built only for a handler that takes one)."""
        return Context(
            job_id=job.id,
            function=self._name,
            attempt=job.attempts + 1,
            deadline=time.monotonic() + self.spec.options.timeout_s,
            params=self._params,
            extend_lease=lambda: self._extend_lease(job),
            logger=self._handler_log,
            progress=reporter.report if reporter is not None else None,
            cancelled=cancelled,
        )

    async def _on_loop(self, job: ClaimedJob, args: tuple[Any, ...]) -> Outcome:
        """An ``async def`` handler, inline in its run's task, under its timeout: a timer
        that asks the run's owner to stop the run (recorded there, then the task is
        cancelled). What the handler returns or raises is the attempt's outcome, unless
        the runtime stopped the run meanwhile, whatever the handler made of that: timed
        out, the attempt failed as ``timeout``; drained or lost, it has no outcome (a
        CancelledError, as the run's owner expects)."""
        lease = (job.id, job.token)
        timer = asyncio.get_running_loop().call_later(
            self.spec.options.timeout_s, self._time_out, lease
        )
        try:
            result = await self.spec.handler(*args)
        except BaseException as exc:  # even KeyboardInterrupt: it must not reach the loop
            outcome = handler_raised(exc)
        else:
            outcome = _completed(result)
        finally:
            timer.cancel()
        why = self._why_stopped(lease)
        if why is None:
            return outcome
        if why == "timeout":
            return Failed("timeout", "attempt timed out")
        raise asyncio.CancelledError(f"the runtime stopped the run ({why})")

    async def _in_thread(self, job: ClaimedJob, args: tuple[Any, ...]) -> Outcome:
        """A ``def`` handler in this function's thread pool, abandoned on timeout. What it
        raises is caught in its thread, BaseExceptions included."""
        # In a copy of this task's context: the handler's log lines carry the job's trace
        # ids, and its own spans nest under the job's.
        run = functools.partial(contextvars.copy_context().run, _called, self.spec.handler, args)
        fut = asyncio.get_running_loop().run_in_executor(self._threads, run)
        self.threads_running[(job.id, job.token)] = fut
        done, _ = await asyncio.wait({fut}, timeout=self.spec.options.timeout_s)
        if not done:
            return Failed("timeout", "attempt timed out (thread abandoned)")
        try:
            return fut.result()
        except BaseException as exc:  # the pool was shut down under it (at close)
            return classify(exc)

    async def _in_process(self, job: ClaimedJob, env: envelope.Envelope) -> Outcome:
        """An ``executor="process"`` handler, in a killable child (the child reports what the
        handler raised, BaseExceptions included; see process_worker.run_job)."""
        spec = self.spec
        assert self._processes is not None  # noqa: S101 — narrows a type: process mode always has a pool
        try:
            result = await self._processes.run(
                spec.handler.__code__.co_filename,
                spec.handler.__name__,
                env.payload,
                job_id=job.id,
                function=spec.name,
                attempt=job.attempts + 1,
                timeout_s=spec.options.timeout_s,
                params=self._params,
                log_ids=_current_trace_ids(),
            )
        except ChildCrashed as exc:
            return Crashed(f"handler process died: {exc}")
        except Exception as exc:  # Retry, Reject, RemoteError, the pool's TimeoutError
            return classify(exc)
        return _completed(result)


def _called(handler: Callable[..., Any], args: tuple[Any, ...]) -> Outcome:
    """Call a ``def`` handler (in its thread); what it returns or raises as an Outcome."""
    try:
        result = handler(*args)
    except BaseException as exc:
        return handler_raised(exc)
    return _completed(result)


def _completed(result: Any) -> Outcome:
    try:
        return Completed(_json.encode(result))
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        return Failed("handler_error", f"result is not JSON-serialisable: {exc}")


def _current_trace_ids() -> dict[str, str]:
    """The trace and span ids of the job's span, for a process child's log lines."""
    ctx = get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


def _outcome_name(outcome: Outcome) -> str:
    match outcome:
        case Completed():
            return "completed"
        case Failed(reason) | DeadLetter(reason):
            return reason
        case Crashed():
            return "worker_crashed"


def _outcome_error(outcome: Outcome) -> str:
    return getattr(outcome, "error", "")
