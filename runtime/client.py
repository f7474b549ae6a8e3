"""The Python client: enqueue jobs and wait for their results.

With a Registry it validates payloads against each function's declared type before
anything reaches Redis (a mismatch is a PayloadError naming the field); without one it
encodes the payload as given and the worker dead-letters what does not decode.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import msgspec
import redis.asyncio as aioredis

from runtime import envelope
from runtime.broker import JobRecord, RedisBroker, connect
from runtime.errors import JobFailed, ResultTimeout, UnknownFunction, UnknownJob
from runtime.function import PRIORITIES, Priority, suggest
from runtime.registry import Registry
from runtime.settings import RedisSettings, Settings


class Client:
    """``async with Client(url) as c: job_id = await c.enqueue("hello", {"name": "Ada"})``."""

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
        self._redis: aioredis.Redis = connect(rs, redis_url)
        self._registry = registry
        self.broker = RedisBroker(
            self._redis,
            namespace,
            keep_result_s=keep_result_s,
            block_s=max(0.05, rs.timeout_s * 0.8),
        )

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

    def encode_payload(self, function: str, payload: Any) -> tuple[bytes, Priority]:
        """Validate (when the function is known) and encode; returns (bytes, default lane)."""
        if self._registry is None:
            return msgspec.msgpack.encode(payload), "default"
        spec = self._registry.get(function)
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
    ) -> str:
        """Enqueue a job; returns its id (``<function>.<id>``). Idempotent by job id and key.

        The same ``job_id`` or ``idempotency_key`` twice returns the first job's id.
        """
        if self._registry is not None and function not in self._registry:
            raise UnknownFunction(
                f"unknown function '{function}'{suggest(function, self._registry.names)}"
            )
        if priority is not None and priority not in PRIORITIES:
            raise ValueError(f"priority {priority!r} must be one of {', '.join(PRIORITIES)}")
        if delay_s is not None and delay_s < 0:
            raise ValueError(f"delay_s={delay_s!r} must be >= 0")
        data, default_priority = self.encode_payload(function, payload)
        full_id = envelope.new_job_id(function, job_id)
        env = envelope.encode(envelope.Envelope(envelope.ENVELOPE_VERSION, full_id, function, data))
        job, _ = await self.broker.enqueue(
            function,
            full_id,
            env,
            priority=priority or default_priority,
            delay_s=delay_s,
            idempotency_key=idempotency_key,
            notify=notify,
        )
        return job

    async def job(self, job_id: str) -> JobRecord | None:
        return await self.broker.job(job_id)

    async def wait(self, job_id: str, timeout_s: float) -> JobRecord:
        """The job's record once terminal; ResultTimeout if it is not done in time."""
        record = await self.broker.wait(job_id, timeout_s)
        if record is None:
            raise UnknownJob(f"no job {job_id!r} (never enqueued, or its result expired)")
        if not record.is_terminal:
            raise ResultTimeout(job_id, timeout_s)
        return record

    async def result(self, job_id: str, timeout_s: float = 30.0) -> Any:
        """The handler's return value (decoded JSON); JobFailed if it was dead-lettered."""
        record = await self.wait(job_id, timeout_s)
        if record.state != "completed":
            raise JobFailed(job_id, record.reason or "unknown", record.error or "")
        return msgspec.json.decode(record.result or b"null")
