"""One attempt of a job: decode its envelope, run its handler on the function's executor
within ``timeout_s``, and classify what happened as an Outcome. Measured (worker_active,
the duration histogram) and traced (a CONSUMER span per attempt when tracing is on).

Executors: ``async def`` handlers run on the event loop, each in a task of its own, and are
cancelled on timeout; plain ``def`` handlers run in this function's thread pool and are
abandoned on timeout; ``executor="process"`` handlers run in a killable subprocess pool. A
handler that outlives its attempt (a thread, or a coroutine that ignores its cancellation)
keeps its slot until it really ends (see ``handlers_running``), never its lease.

Whatever a handler raises is an outcome, on every executor: any ``BaseException``
(``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``, a ``CancelledError``, custom
ones) fails the attempt as ``handler_error``. The runtime's own ends of an attempt are
its own: the timeout here, and the worker cancelling the attempt's task (a drain or a
lost lease; the worker records which before it cancels).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
from opentelemetry.trace import Status, StatusCode, get_current_span

from runtime.context import Context
from runtime.execution.held import Lease
from runtime.execution.process_pool import ChildCrashed, ProcessPool
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
log = logging.getLogger("runtime.worker")  # the worker's parts log as the worker
STOP_GRACE_S = 1.0  # a cancelled async handler's time to end before it is abandoned


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
        # lease -> its handler, while a thread handler runs (or runs on, abandoned), or
        # while an async handler that ignored its cancellation runs on, abandoned
        self.handlers_running: dict[Lease, asyncio.Future[Any]] = {}
        self._abandoned: set[asyncio.Task[Outcome]] = set()  # referenced until they end
        self._threads: ThreadPoolExecutor | None = None
        self._processes: ProcessPool | None = None
        if spec.executor == "thread":
            self._threads = ThreadPoolExecutor(
                max_workers=spec.options.concurrency, thread_name_prefix=f"fn-{spec.name}"
            )
        elif spec.executor == "process":
            self._processes = ProcessPool(spec.options.concurrency)

    async def close(self) -> None:
        """Stop the pools: process children are killed, threads are left to end (and so
        are abandoned coroutines, cancelled once more)."""
        for handler in list(self._abandoned):
            handler.cancel()
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
        if self._processes is not None:
            return await self._in_process(job, env)
        ctx = Context(
            job_id=job.id,
            function=spec.name,
            attempt=job.attempts + 1,
            deadline=time.monotonic() + spec.options.timeout_s,
            params=self._params,
            extend_lease=lambda: self._extend_lease(job),
        )
        args = (payload, ctx) if spec.takes_context else (payload,)
        if self._threads is None:
            return await self._on_loop(job, args)
        return await self._in_thread(job, args)

    async def _on_loop(self, job: ClaimedJob, args: tuple[Any, ...]) -> Outcome:
        """An ``async def`` handler, in a task of its own: whatever it raises (even a
        KeyboardInterrupt, which would stop the event loop) or however it treats a
        cancellation, the attempt ends on the runtime's terms: its timeout, or the worker
        cancelling this task (a drain, a lost lease), which is re-raised here."""
        handler = asyncio.create_task(_caught(self.spec.handler, args), name=f"handler:{job.id}")
        try:
            done, _ = await asyncio.wait({handler}, timeout=self.spec.options.timeout_s)
        except asyncio.CancelledError:
            await self._stop(job, handler)
            raise
        if not done:
            await self._stop(job, handler)
            return Failed("timeout", "attempt timed out")
        return handler.result()

    async def _stop(self, job: ClaimedJob, handler: asyncio.Task[Outcome]) -> None:
        """Cancel a handler whose attempt is over, and give it ``STOP_GRACE_S`` to end. One
        that ignores the cancellation runs on, abandoned: its job is settled (or released)
        now, and its slot comes back only when it really ends (``handlers_running``)."""
        handler.cancel()
        try:
            await asyncio.wait({handler}, timeout=STOP_GRACE_S)
        finally:
            if not handler.done():
                log.warning(
                    "%s: the handler of job %s ignored its cancellation; abandoning it (its "
                    "slot stays taken until it ends)",
                    self._name,
                    job.id,
                )
                self.handlers_running[(job.id, job.token)] = handler
                self._abandoned.add(handler)
                handler.add_done_callback(self._abandoned.discard)

    async def _in_thread(self, job: ClaimedJob, args: tuple[Any, ...]) -> Outcome:
        """A ``def`` handler in this function's thread pool, abandoned on timeout. What it
        raises is caught in its thread, BaseExceptions included."""
        # In a copy of this task's context: the handler's log lines carry the job's trace
        # ids, and its own spans nest under the job's.
        run = functools.partial(contextvars.copy_context().run, _called, self.spec.handler, args)
        fut = asyncio.get_running_loop().run_in_executor(self._threads, run)
        self.handlers_running[(job.id, job.token)] = fut
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
        assert self._processes is not None
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


async def _caught(handler: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> Outcome:
    """Await an async handler; what it returns or raises (any BaseException, even a
    CancelledError: whether the runtime cancelled it is the caller's record) as an Outcome."""
    try:
        result = await handler(*args)
    except BaseException as exc:
        return handler_raised(exc)
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
