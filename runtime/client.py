"""The Python client: enqueue jobs and wait for their results.

With a Registry it validates payloads against each function's declared type before
anything reaches Redis (a mismatch is a PayloadError naming the field); without one it
encodes the payload as given and the worker dead-letters what does not decode.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import msgspec

from runtime.config.registry import Registry
from runtime.config.schema import RedisSettings, Settings
from runtime.errors import (
    BrokerError,
    JobFailed,
    PayloadError,
    ResultTimeout,
    UnknownFunction,
    UnknownJob,
)
from runtime.function import PRIORITIES, Priority, suggest
from runtime.jobs import envelope
from runtime.jobs.records import JobRecord
from runtime.observe.metrics import Metrics
from runtime.observe.tracing import Tracing
from runtime.queue.connection import RedisClient, connect
from runtime.queue.control import CancelReply, HistoryPage
from runtime.queue.enqueue_args import NewJob
from runtime.queue.sharded import ShardedBroker

MAX_DELAY_S = 365 * 86400.0
# enqueue_many sends a pipeline once it holds this many jobs or envelope bytes: thousands of
# jobs cost a few round trips, and one pipeline's buffers stay a few MiB.
CHUNK_JOBS = 500
CHUNK_BYTES = 8 * 1024 * 1024
# Pipelines of one call in flight at once (one connection each): the next chunk is built
# and packed while Redis runs the one before, so the producer's CPU and Redis's overlap.
PIPELINES = 2


class EnqueueResult(msgspec.Struct, frozen=True):
    """One item of ``enqueue_many``: the job's id and whether this call created it (False:
    its job id or idempotency key was known), or the error that kept it out (``job_id`` is
    then None): a ``PayloadError`` for a payload or job id that failed validation, a
    ``BrokerCommandError`` (e.g. ``RedisMemoryFull``) for an item Redis refused."""

    job_id: str | None
    created: bool = False
    error: Exception | None = None


class Producer:
    """Validates, encodes and enqueues jobs on a broker; shared by the Client and the HTTP
    API. Counts what it creates and opens the enqueue span whose context the job carries."""

    def __init__(
        self,
        broker: ShardedBroker,
        registry: Registry | None = None,
        *,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.broker = broker
        self.registry = registry
        for spec in registry or ():
            broker.shards[spec.name] = spec.options.shards
        self._metrics = metrics
        self._tracing = tracing or Tracing()

    def encode_payload(self, function: str, payload: Any) -> tuple[bytes, Priority]:
        """Validate (when the function is known) and encode; returns (bytes, default lane)."""
        if self.registry is None:
            return msgspec.msgpack.encode(payload), "default"
        spec = self.registry.get(function)
        return spec.encode(payload), spec.options.priority

    def _check(self, function: str, priority: Priority | None, delay_s: float | None) -> None:
        if self.registry is not None and function not in self.registry:
            raise UnknownFunction(
                f"unknown function '{function}'{suggest(function, self.registry.names)}"
            )
        if priority is not None and priority not in PRIORITIES:
            raise ValueError(f"priority {priority!r} must be one of {', '.join(PRIORITIES)}")
        if delay_s is not None and not 0 <= delay_s <= MAX_DELAY_S:
            raise ValueError(f"delay_s={delay_s!r} must be between 0 and {MAX_DELAY_S}")

    async def enqueue(
        self,
        function: str,
        payload: Any = None,
        *,
        job_id: str | None = None,
        idempotency_key: str | None = None,
        priority: Priority | None = None,
        delay_s: float | None = None,
        notify: bool = False,
    ) -> tuple[str, bool]:
        """Enqueue a job; returns (its id, whether it was created now)."""
        self._check(function, priority, delay_s)
        data, default_priority = self.encode_payload(function, payload)
        shard = 0 if job_id is not None else await self.broker.pick_shard(function, idempotency_key)
        full_id = envelope.new_job_id(function, job_id, shard)
        with self._tracing.enqueue_span(function) as (carrier, span):
            env = envelope.encode(
                envelope.Envelope(envelope.ENVELOPE_VERSION, full_id, function, data, carrier)
            )
            job, created = await self.broker.enqueue(
                function,
                full_id,
                env,
                priority=priority or default_priority,
                delay_s=delay_s,
                idempotency_key=idempotency_key,
                notify=notify,
                own_id=job_id is not None,
            )
            if span.is_recording():
                span.set_attribute("runtime.job_id", job)
                span.set_attribute("runtime.created", created)
        self._count(function, int(created))
        return job, created

    def _count(self, function: str, created: int) -> None:
        if created and self._metrics is not None and function in self._metrics.functions:
            self._metrics.functions[function].produced.inc(created)

    async def enqueue_many(
        self,
        function: str,
        payloads: Sequence[Any],
        *,
        priority: Priority | None = None,
        delay_s: float | None = None,
        job_ids: Sequence[str | None] | None = None,
        idempotency_keys: Sequence[str | None] | None = None,
    ) -> list[EnqueueResult]:
        """Enqueue one job per payload, in pipelines of up to CHUNK_JOBS jobs, at most
        PIPELINES of them (and connections) at once; returns one EnqueueResult per payload,
        in order.

        Each payload (and job id) is validated first: one that fails gets its error in its
        result and the others go in. Every job's id is made before anything is sent, so a
        chunk that redis-py sends again after a broken connection creates nothing twice
        (enqueue.lua is keyed by job id and idempotency key); a job whose id this call made
        and that Redis reports as already there was created by this call's earlier send,
        and is reported created. A connection that stays broken raises BrokerUnavailable:
        the chunks before it are in, so pass ``job_ids`` or ``idempotency_keys`` to make a
        retry of the whole call safe."""
        self._check(function, priority, delay_s)
        for name, given in (("job_ids", job_ids), ("idempotency_keys", idempotency_keys)):
            if given is not None and len(given) != len(payloads):
                raise ValueError(
                    f"{name} has {len(given)} items for {len(payloads)} payloads; "
                    "give one per payload (None for none)"
                )
        results: list[EnqueueResult] = [_NOT_SENT] * len(payloads)
        in_flight: deque[asyncio.Task[None]] = deque()
        chunk: list[tuple[int, NewJob, bool]] = []  # (index, job, is the id ours)
        size = 0
        try:
            for i, payload in enumerate(payloads):
                own_id = job_ids[i] if job_ids is not None else None
                key = idempotency_keys[i] if idempotency_keys is not None else None
                try:
                    data, default_priority = self.encode_payload(function, payload)
                    shard = 0 if own_id is not None else await self.broker.pick_shard(function, key)
                    full_id = envelope.new_job_id(function, own_id, shard)
                except (PayloadError, OverflowError, TypeError) as exc:
                    results[i] = EnqueueResult(None, error=_payload_error(function, exc))
                    continue
                job = NewJob(
                    full_id, data, priority or default_priority, delay_s, key, own_id is not None
                )
                chunk.append((i, job, own_id is None))
                size += len(data)
                if len(chunk) >= CHUNK_JOBS or size >= CHUNK_BYTES or i == len(payloads) - 1:
                    if len(in_flight) >= PIPELINES:
                        await in_flight.popleft()
                    in_flight.append(asyncio.ensure_future(self._send(function, chunk, results)))
                    chunk, size = [], 0
            if chunk:  # the last payloads failed validation: what came before them
                in_flight.append(asyncio.ensure_future(self._send(function, chunk, results)))
            while in_flight:
                await in_flight.popleft()
        finally:
            for task in in_flight:  # a chunk failed (or the call was cancelled): stop the rest
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
        return results

    async def _send(
        self, function: str, chunk: list[tuple[int, NewJob, bool]], results: list[EnqueueResult]
    ) -> None:
        """Wrap each payload in its envelope (one enqueue span per chunk: every job of it
        carries that span's context) and send the chunk as one pipeline."""
        if not chunk:
            return
        with self._tracing.enqueue_span(function) as (carrier, span):
            jobs = [
                job._replace(
                    envelope=envelope.encode(
                        envelope.Envelope(
                            envelope.ENVELOPE_VERSION, job.job_id, function, job.envelope, carrier
                        )
                    )
                )
                for _, job, _ in chunk
            ]
            replies = await self.broker.enqueue_many(function, jobs)
            if span.is_recording():
                span.set_attribute("runtime.jobs", len(jobs))
        created = 0
        for (i, job, is_ours), reply in zip(chunk, replies, strict=True):
            if isinstance(reply, BrokerError):
                results[i] = EnqueueResult(None, error=reply)
                continue
            job_id, is_new = reply
            # Our own random id already there: this call's earlier send (a retry) made it.
            is_new = is_new or (is_ours and job_id == job.job_id)
            created += is_new
            results[i] = EnqueueResult(job_id, is_new)
        self._count(function, created)


_NOT_SENT = EnqueueResult(None)


def _payload_error(function: str, exc: Exception) -> PayloadError:
    if isinstance(exc, PayloadError):
        return exc
    # msgpack has 64-bit integers and no arbitrary objects (no registry: nothing converts)
    error = PayloadError(f"{function}: the payload cannot be encoded: {exc}")
    error.__cause__ = exc
    return error


class Client:
    """``async with Client(url) as c: job_id = await c.enqueue("hello", {"name": "Ada"})``.

    Every method raises the runtime's own errors, never redis-py's: ``BrokerUnavailable``
    when Redis does not answer (after the connection's retries), ``RedisMemoryFull`` when
    Redis refuses a write at ``maxmemory``, ``BrokerCommandError`` for any other error
    reply; all three are ``BrokerError``, a ``RuntimeFailure`` (see ``runtime.errors``).
    """

    def __init__(
        self,
        redis_url: str,
        *,
        namespace: str = "rt",
        registry: Registry | None = None,
        redis_settings: RedisSettings | None = None,
        keep_result_s: int = 86400,
    ) -> None:
        rs = redis_settings or RedisSettings()
        self._redis: RedisClient = connect(rs, redis_url)
        self.broker = ShardedBroker(
            self._redis,
            namespace,
            keep_result_s=keep_result_s,
            block_s=rs.block_s,
        )
        self.producer = Producer(self.broker, registry)

    @classmethod
    def from_settings(
        cls, settings: Settings, url: str, registry: Registry | None = None
    ) -> Client:
        return cls(
            url,
            namespace=settings.namespace,
            registry=registry,
            redis_settings=settings.redis,
            keep_result_s=settings.worker.keep_result_s,
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._redis.aclose()

    async def enqueue(
        self,
        function: str,
        payload: Any = None,
        *,
        job_id: str | None = None,
        idempotency_key: str | None = None,
        priority: Priority | None = None,
        delay_s: float | None = None,
        notify: bool = False,
    ) -> str:
        """Enqueue a job; returns its id (``<function>.<id>``). Idempotent by job id and key.

        The same ``job_id`` or ``idempotency_key`` twice returns the first job's id.
        With a registry the payload is validated first (PayloadError naming the field).
        """
        job, _ = await self.producer.enqueue(
            function,
            payload,
            job_id=job_id,
            idempotency_key=idempotency_key,
            priority=priority,
            delay_s=delay_s,
            notify=notify,
        )
        return job

    async def enqueue_many(
        self,
        function: str,
        payloads: Sequence[Any],
        *,
        priority: Priority | None = None,
        delay_s: float | None = None,
        job_ids: Sequence[str | None] | None = None,
        idempotency_keys: Sequence[str | None] | None = None,
    ) -> list[EnqueueResult]:
        """Enqueue one job per payload, pipelined (hundreds of jobs a round trip, on one
        connection): ten times and more the jobs/s of an ``enqueue`` loop. Returns one
        ``EnqueueResult`` per payload, in order: its ``job_id`` and ``created``, or the
        ``error`` that kept that item out (a payload failing validation); the others go in.
        ``job_ids`` and ``idempotency_keys``, one per payload (None for none), make a retry
        of the whole call create nothing twice."""
        return await self.producer.enqueue_many(
            function,
            payloads,
            priority=priority,
            delay_s=delay_s,
            job_ids=job_ids,
            idempotency_keys=idempotency_keys,
        )

    async def job(self, job_id: str) -> JobRecord | None:
        return await self.broker.job(job_id)

    async def cancel(self, job_id: str) -> CancelReply:
        """Cancel a job. ``outcome`` says what happened: ``cancelled`` (it was queued or
        delayed and will never run), ``requested`` (it is running: its worker stops it within
        a heartbeat and it ends ``cancelled``, whatever its handler returns), ``finished``
        (it had already ended: ``state`` says how), ``missing`` or ``corrupt``. The request
        is kept in the job's record: it holds across worker restarts and reclaims."""
        return await self.broker.cancel(job_id)

    async def history(self, function: str, **filters: Any) -> HistoryPage:
        """A page of ``function``'s finished runs, newest first (``JobControl.history``:
        state, reason, since_ms, until_ms, cursor, limit)."""
        return await self.broker.history(function, **filters)

    async def wait(self, job_id: str, timeout_s: float) -> JobRecord:
        """The job's record once terminal; ResultTimeout if it is not done in time."""
        return await wait_terminal(self.broker, job_id, timeout_s)

    async def result(self, job_id: str, timeout_s: float = 30.0) -> Any:
        """The handler's return value (decoded JSON); JobFailed if it was dead-lettered."""
        record = await self.wait(job_id, timeout_s)
        if record.state != "completed":
            raise JobFailed(job_id, record.reason or "unknown", record.error or "")
        return msgspec.json.decode(record.result or b"null")


async def wait_terminal(broker: ShardedBroker, job_id: str, timeout_s: float) -> JobRecord:
    """The job's record once terminal; UnknownJob or ResultTimeout otherwise."""
    record = await broker.wait(job_id, timeout_s)
    if record is None:
        raise UnknownJob(f"no job {job_id!r} (never enqueued, or its result expired)")
    if not record.is_terminal:
        raise ResultTimeout(job_id, timeout_s, record.state)
    return record
