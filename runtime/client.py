"""The Python client: enqueue jobs and wait for their results.

With a Registry it validates payloads against each function's declared type before
anything reaches Redis (a mismatch is a PayloadError naming the field); without one it
encodes the payload as given and the worker dead-letters what does not decode.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import msgspec

from runtime.config.registry import Registry
from runtime.config.schema import RedisSettings, Settings
from runtime.errors import JobFailed, ResultTimeout, UnknownFunction, UnknownJob
from runtime.function import PRIORITIES, Priority, suggest
from runtime.jobs import envelope
from runtime.jobs.records import JobRecord
from runtime.observe.metrics import Metrics
from runtime.observe.tracing import Tracing
from runtime.queue.broker import RedisBroker
from runtime.queue.connection import RedisClient, connect

MAX_DELAY_S = 365 * 86400.0


class Producer:
    """Validates, encodes and enqueues jobs on a broker; shared by the Client and the HTTP
    API. Counts what it creates and opens the enqueue span whose context the job carries."""

    def __init__(
        self,
        broker: RedisBroker,
        registry: Registry | None = None,
        *,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.broker = broker
        self.registry = registry
        self._metrics = metrics
        self._tracing = tracing or Tracing()

    def encode_payload(self, function: str, payload: Any) -> tuple[bytes, Priority]:
        """Validate (when the function is known) and encode; returns (bytes, default lane)."""
        if self.registry is None:
            return msgspec.msgpack.encode(payload), "default"
        spec = self.registry.get(function)
        return spec.encode(payload), spec.options.priority

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
        if self.registry is not None and function not in self.registry:
            raise UnknownFunction(
                f"unknown function '{function}'{suggest(function, self.registry.names)}"
            )
        if priority is not None and priority not in PRIORITIES:
            raise ValueError(f"priority {priority!r} must be one of {', '.join(PRIORITIES)}")
        if delay_s is not None and not 0 <= delay_s <= MAX_DELAY_S:
            raise ValueError(f"delay_s={delay_s!r} must be between 0 and {MAX_DELAY_S}")
        data, default_priority = self.encode_payload(function, payload)
        full_id = envelope.new_job_id(function, job_id)
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
            )
            if span.is_recording():
                span.set_attribute("runtime.job_id", job)
                span.set_attribute("runtime.created", created)
        if created and self._metrics is not None and function in self._metrics.functions:
            self._metrics.functions[function].produced.inc()
        return job, created


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
        self.broker = RedisBroker(
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

    async def job(self, job_id: str) -> JobRecord | None:
        return await self.broker.job(job_id)

    async def wait(self, job_id: str, timeout_s: float) -> JobRecord:
        """The job's record once terminal; ResultTimeout if it is not done in time."""
        return await wait_terminal(self.broker, job_id, timeout_s)

    async def result(self, job_id: str, timeout_s: float = 30.0) -> Any:
        """The handler's return value (decoded JSON); JobFailed if it was dead-lettered."""
        record = await self.wait(job_id, timeout_s)
        if record.state != "completed":
            raise JobFailed(job_id, record.reason or "unknown", record.error or "")
        return msgspec.json.decode(record.result or b"null")


async def wait_terminal(broker: RedisBroker, job_id: str, timeout_s: float) -> JobRecord:
    """The job's record once terminal; UnknownJob or ResultTimeout otherwise."""
    record = await broker.wait(job_id, timeout_s)
    if record is None:
        raise UnknownJob(f"no job {job_id!r} (never enqueued, or its result expired)")
    if not record.is_terminal:
        raise ResultTimeout(job_id, timeout_s, record.state)
    return record
