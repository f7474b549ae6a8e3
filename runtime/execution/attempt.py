"""One attempt of a job: decode its envelope, run its handler on the function's executor
within ``timeout_s``, and classify what happened as an Outcome. Measured (worker_active,
the duration histogram) and traced (a CONSUMER span per attempt when tracing is on).

Executors: ``async def`` handlers run on the event loop and are cancelled on timeout; plain
``def`` handlers run in this function's thread pool and are abandoned on timeout (the
worker returns the slot only when the thread really ends: see ``threads_running``);
``executor="process"`` handlers run in a killable subprocess pool.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
from opentelemetry.trace import Status, StatusCode, get_current_span

from runtime.context import Context
from runtime.execution.process_pool import ChildCrashed, ProcessPool
from runtime.function import FunctionSpec
from runtime.jobs import envelope
from runtime.jobs.outcome import Completed, Crashed, DeadLetter, Failed, Outcome, classify
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
        params: Mapping[str, Any] | None = None,
        metrics: FunctionMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.spec = spec
        self._name = spec.name
        self._max_envelope_bytes = max_envelope_bytes
        self._extend_lease = extend_lease
        self._params = params or {}
        self._metrics = metrics
        self._tracing = tracing or Tracing()
        # job id -> its thread, while a thread handler runs (or runs on, abandoned)
        self.threads_running: dict[str, asyncio.Future[Any]] = {}
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
        if m is not None:
            m.active.inc()
        try:
            return await self._execute(job, env)
        finally:
            if m is not None:
                m.active.dec()
                m.duration.observe(time.perf_counter() - started)

    async def _execute(self, job: ClaimedJob, env: envelope.Envelope) -> Outcome:
        spec = self.spec
        try:
            payload = spec.decode(env.payload)
        except Exception as exc:
            return classify(exc)
        timeout_s = spec.options.timeout_s
        attempt = job.attempts + 1
        loop = asyncio.get_running_loop()
        try:
            if self._processes is not None:
                result = await self._processes.run(
                    spec.handler.__code__.co_filename,
                    spec.handler.__name__,
                    env.payload,
                    job_id=job.id,
                    function=spec.name,
                    attempt=attempt,
                    timeout_s=timeout_s,
                    params=self._params,
                    log_ids=_current_trace_ids(),
                )
            else:
                ctx = Context(
                    job_id=job.id,
                    function=spec.name,
                    attempt=attempt,
                    deadline=time.monotonic() + timeout_s,
                    params=self._params,
                    extend_lease=lambda: self._extend_lease(job),
                )
                args = (payload, ctx) if spec.takes_context else (payload,)
                if self._threads is None:
                    async with asyncio.timeout(timeout_s) as scope:
                        try:
                            result = await spec.handler(*args)
                        except TimeoutError:
                            if scope.expired():
                                raise
                            raise _HandlerTimeoutError() from None
                else:
                    # In a copy of this task's context: the handler's log lines carry
                    # the job's trace ids, and its own spans nest under the job's.
                    run = functools.partial(contextvars.copy_context().run, spec.handler)
                    fut = loop.run_in_executor(self._threads, run, *args)
                    self.threads_running[job.id] = fut
                    done, _ = await asyncio.wait({fut}, timeout=timeout_s)
                    if not done:
                        return Failed("timeout", "attempt timed out (thread abandoned)")
                    result = fut.result()
        except asyncio.CancelledError:
            raise
        except ChildCrashed as exc:
            return Crashed(f"handler process died: {exc}")
        except _HandlerTimeoutError:
            return Failed("handler_error", "TimeoutError raised by the handler")
        except (Exception, SystemExit) as exc:
            return classify(exc)
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


class _HandlerTimeoutError(Exception):
    """The handler raised TimeoutError itself (not our attempt timeout)."""
