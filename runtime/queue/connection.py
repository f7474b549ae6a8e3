"""The connection to Redis, and the one seam where redis-py's exceptions end.

Every Redis client of the runtime comes from ``connect()``: a ``RedisClient`` whose every
command, pipeline and subscription raises the runtime's own errors (``runtime.errors``),
the way httpx maps httpcore's exceptions in its transport. Nothing above ``runtime.queue``
imports redis-py or catches its types:

    redis.exceptions.ConnectionError (incl. LOADING, auth, no pool connection),
    redis.exceptions.TimeoutError, OSError     -> BrokerUnavailable
    OOM command not allowed                     -> RedisMemoryFull
    any other redis.exceptions.RedisError       -> BrokerCommandError

``NoScriptError`` alone passes through a single command untranslated: redis-py's ``Script``
catches it to load the script and call it again, so it never leaves a script call.

Translation happens outside redis-py's own retry loop, so a connection error is still
retried (``connect``'s ``Retry``) before a caller sees ``BrokerUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, NoReturn, cast

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from runtime.config.schema import RedisSettings
from runtime.errors import BrokerCommandError, BrokerError, BrokerUnavailable, RedisMemoryFull

_UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
_TRANSLATED = (redis.exceptions.RedisError, OSError)
_SCRIPT_RELOAD = redis.exceptions.NoScriptError


def translated(exc: BaseException) -> BrokerError:
    """The runtime's error for a redis-py (or socket) exception, chained to it."""
    message, cause = str(exc), type(exc).__name__
    error: BrokerError
    if isinstance(exc, _UNAVAILABLE):
        error = BrokerUnavailable(message, cause)
    elif isinstance(exc, redis.exceptions.OutOfMemoryError) or message.startswith("OOM "):
        error = RedisMemoryFull(message, cause)
    else:
        error = BrokerCommandError(message, cause)
    error.__cause__ = exc
    return error


def _raise_translated(exc: BaseException) -> NoReturn:
    raise translated(exc) from exc


class RedisClient(aioredis.Redis):
    """redis-py's asyncio client, raising the runtime's errors (see the module docstring)."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except _SCRIPT_RELOAD:
            raise
        except _TRANSLATED as exc:
            _raise_translated(exc)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return TranslatedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )

    def pubsub(self, **kwargs: Any) -> PubSub:
        return TranslatedPubSub(
            self.connection_pool, event_dispatcher=self._event_dispatcher, **kwargs
        )


class TranslatedPipeline(Pipeline):
    """A pipeline whose ``execute`` raises the runtime's errors. Errors returned inside the
    reply list (``raise_on_error=False``) are translated into it as values too."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        try:
            replies = await super().execute(raise_on_error)
        except _TRANSLATED as exc:
            _raise_translated(exc)
        return [_as_value(r) for r in replies]


def _as_value(reply: Any) -> Any:
    return translated(reply) if isinstance(reply, _TRANSLATED) else reply


class TranslatedPubSub(PubSub):
    """A subscription whose commands and reads raise the runtime's errors."""

    async def execute_command(self, *args: Any) -> Any:
        try:
            return await super().execute_command(*args)
        except _TRANSLATED as exc:
            _raise_translated(exc)

    async def parse_response(self, block: bool = True, timeout: float = 0) -> Any:  # noqa: ASYNC109
        try:
            return await super().parse_response(block, timeout)
        except _TRANSLATED as exc:
            _raise_translated(exc)


def connect(settings: RedisSettings, url: str) -> RedisClient:
    """A client whose every call has a timeout and is retried on connection errors.

    Retrying is safe only because every write is an idempotent script.
    """
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=3)
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=settings.max_connections,
        timeout=settings.timeout_s,
        socket_timeout=settings.timeout_s,
        socket_connect_timeout=settings.connect_timeout_s,
        retry=retry,
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        health_check_interval=30,
    )
    return cast("RedisClient", RedisClient.from_pool(pool))  # closing it closes its pool


async def close_pubsub(pubsub: PubSub) -> None:
    """Close a subscription without waiting on (or failing over) a broken connection."""
    with contextlib.suppress(BrokerUnavailable, OSError, TimeoutError):
        async with asyncio.timeout(1.0):
            await pubsub.aclose()  # type: ignore[no-untyped-call]
