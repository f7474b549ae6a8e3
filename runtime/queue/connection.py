"""The connection to Redis, and the one seam where redis-py's exceptions end.

Every Redis client of the runtime comes from ``connect()``: a ``RedisClient`` whose every
command, pipeline and subscription raises the runtime's own errors (``runtime.errors``),
the way httpx maps httpcore's exceptions in its transport. Nothing above ``runtime.queue``
imports redis-py or catches its types:

    redis.exceptions.ConnectionError (incl. LOADING, auth, no pool connection),
    redis.exceptions.TimeoutError, OSError     -> BrokerUnavailable
    OOM command not allowed                     -> RedisMemoryFull
    NOPERM, or a script's command refused       -> BrokerPermissionError (one line: the
                                                   command, key or channel, and the rule)
    any other redis.exceptions.RedisError       -> BrokerCommandError

``NoScriptError`` alone passes through a single command untranslated: redis-py's ``Script``
catches it to load the script and call it again, so it never leaves a script call.

Translation happens outside redis-py's own retry loop, so a connection error is still
retried (``connect``'s ``Retry``) before a caller sees ``BrokerUnavailable``.

**The retry rule.** A timeout says nothing about whether Redis applied the call: the reply
may be late, not lost. So redis-py's retry (3 more tries on a connection error or timeout)
may send a write twice, and only a write that lands the same way twice may be retried:

- scripts (EVALSHA/EVAL): retried; every script states "safe to run twice" in its header;
- SET, HSET, DEL, EXPIRE, ZREM, HDEL, SET NX, ...: retried; the same arguments leave the
  same state however often they land (the runtime writes no value that depends on a read);
- commands that append, count or announce (RPUSH, LPUSH, INCR, HINCRBY, PUBLISH, ...:
  ``NOT_IDEMPOTENT``), and any pipeline or MULTI/EXEC holding one: sent *once*, with no
  retry; a failure reaches the caller as ``BrokerUnavailable``, and the caller decides
  (the runtime itself sends none of them outside a script but ``INCR`` of the deploy
  sequence, where a lost or doubled number only leaves a gap).

``once()`` turns the retry off for everything awaited inside it, for a caller who knows
better than the table. The writes the runtime sends outside a script, audited against
the rule: ``HSET``+``EXPIRE`` of a breaker report (broker.py; same field, same value),
``SET NX`` of the epoch (epoch.py; only the first lands), ``ZREM``+``HDEL`` of a leaving
instance (instances.py), ``HSET``/``HDEL`` of a deploy status (deploy/store.py; the same
value), ``BLMOVE`` of a done list onto itself (queries.py; a rotation of one element),
and ``INCR`` of the deploy sequence (deploy/store.py; sent once by the table).

**The pool is fair.** ``FairConnectionPool`` hands connections out first come, first
served, and a caller that waits while no connection comes back for ``redis.timeout_s``
gets ``BrokerUnavailable`` naming ``redis.max_connections``. (redis-py's
``BlockingConnectionPool`` let a newcomer take the connection a waiter was woken for, so
under load one waiter could starve until its wait ran out; its error did not say what to
change.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any, NoReturn, TypeVar, cast

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff

from runtime.config.cluster_url import is_cluster_url
from runtime.config.redaction import redact_text
from runtime.config.schema import RedisSettings
from runtime.errors import (
    BrokerCommandError,
    BrokerError,
    BrokerUnavailable,
    RedisMemoryFull,
)
from runtime.queue.permissions import permission_error
from runtime.queue.resp import with_hiredis_packing

# A cluster in the middle of a failover or a slot move says so with these: the same as a
# node that does not answer (the call may be tried again once the cluster has settled).
_CLUSTER_MOVING = (
    redis.exceptions.ClusterError,  # CLUSTERDOWN, MASTERDOWN
    redis.exceptions.TryAgainError,
    redis.exceptions.AskError,  # MOVED/ASK left over once redis-py's redirects ran out
    redis.exceptions.RedisClusterException,  # no node serves the slot, none answered
)
_UNAVAILABLE = (
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError, *_CLUSTER_MOVING
)  # fmt: skip
_TRANSLATED = (redis.exceptions.RedisError, OSError, redis.exceptions.RedisClusterException)
_SCRIPT_RELOAD = redis.exceptions.NoScriptError
T = TypeVar("T")

# Commands whose second landing differs from the first: never retried (see the docstring).
NOT_IDEMPOTENT = frozenset(
    {
        "APPEND", "DECR", "DECRBY", "HINCRBY", "HINCRBYFLOAT", "INCR", "INCRBY",
        "INCRBYFLOAT", "LINSERT", "LMOVE", "LPOP", "LPUSH", "LPUSHX", "PFADD", "PUBLISH",
        "RPOP", "RPOPLPUSH", "RPUSH", "RPUSHX", "SPOP", "SPUBLISH", "XADD", "ZINCRBY",
    }
)  # fmt: skip
_ONCE: ContextVar[bool] = ContextVar("runtime_redis_once", default=False)


@contextlib.contextmanager
def once() -> Iterator[None]:
    """Every Redis call awaited inside is sent one time: no retry on a timeout."""
    token = _ONCE.set(True)
    try:
        yield
    finally:
        _ONCE.reset(token)


def _is_idempotent(command: object) -> bool:
    name = command.decode() if isinstance(command, bytes) else str(command)
    return name.upper() not in NOT_IDEMPOTENT


class OnceAwareRetry(Retry):
    """redis-py's ``Retry``, except inside ``once()``: then the call is tried one time (the
    failure callback still runs, so the connection with a reply in flight is dropped)."""

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        if _ONCE.get():
            one_try = Retry(NoBackoff(), 0, tuple(self._supported_errors))
            return await one_try.call_with_retry(do, fail, is_retryable, with_failure_count)
        return await super().call_with_retry(do, fail, is_retryable, with_failure_count)


class PoolExhausted(redis.exceptions.ConnectionError):
    """No connection of the pool came free in time (translated to BrokerUnavailable)."""


class FairConnectionPool(aioredis.ConnectionPool):
    """A connection pool whose waiters are served in arrival order (a FIFO semaphore in
    front of redis-py's pool, one permit per connection).

    A waiter gives up only when no connection has come back to the pool for ``wait_s``
    while it waited: a pool that keeps moving serves it in its turn, at most
    (callers ahead + 1) / ``max_connections`` rounds later, however busy the event loop
    is; a pool whose every connection is stuck (Redis paused, calls that never end)
    fails it after ``wait_s``. A fixed bound per wait failed healthy callers on a loaded
    machine, where the loop itself was slow to hand connections back.
    """

    def __init__(self, *, wait_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wait_s = wait_s
        self._permits = asyncio.Semaphore(self.max_connections)
        self._holders: set[object] = set()  # connections handed out with a permit
        self._waiting = 0
        self.returned_at = 0.0  # loop time a connection last came back

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._permits.locked():
            await self._wait_for_permit()
        else:
            await self._permits.acquire()  # free now: does not wait
        try:
            connection = await super().get_connection()  # type: ignore[no-untyped-call]
        except BaseException:
            self._permits.release()
            raise
        self._holders.add(connection)
        return connection

    async def _wait_for_permit(self) -> None:
        loop = asyncio.get_running_loop()
        ahead, started = self._waiting, loop.time()
        self._waiting += 1
        try:
            async with asyncio.timeout(None) as timeout:
                watch = _Watchdog(self, timeout, started)
                try:
                    await self._permits.acquire()  # FIFO; a cancelled wait passes its permit on
                finally:
                    watch.stop()
        except TimeoutError:
            raise PoolExhausted(
                f"no Redis connection came back to the pool in {self.wait_s:g}s: all "
                f"redis.max_connections = {self.max_connections} are busy and {ahead} "
                "callers were waiting ahead; raise redis.max_connections "
                "(RUNTIME_REDIS__MAX_CONNECTIONS), or make fewer calls at once"
            ) from None
        finally:
            self._waiting -= 1

    async def release(self, connection: Any) -> None:
        try:
            await super().release(connection)
        finally:
            # After the connection is back: a woken waiter must find it available.
            if connection in self._holders:
                self._holders.discard(connection)
                self.returned_at = asyncio.get_running_loop().time()
                self._permits.release()


class _Watchdog:
    """Expires a waiter's timeout once no connection has come back for ``wait_s`` since
    it began waiting; re-arms itself while connections keep coming back (one timer a
    waiter, no task)."""

    def __init__(self, pool: FairConnectionPool, timeout: asyncio.Timeout, started: float):
        self._pool, self._timeout, self._started = pool, timeout, started
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_at(started + pool.wait_s, self._check)

    def _check(self) -> None:
        since = max(self._started, self._pool.returned_at)
        if self._loop.time() - since >= self._pool.wait_s:
            self._timeout.reschedule(self._loop.time())  # expires now: the wait is cancelled
        else:
            self._handle = self._loop.call_at(since + self._pool.wait_s, self._check)

    def stop(self) -> None:
        self._handle.cancel()


def translated(exc: BaseException, command: tuple[Any, ...] = ()) -> BrokerError:
    """The runtime's error for a redis-py (or socket) exception, chained to it; a URL
    password in redis-py's message is masked (the chained original keeps it, for a
    debugger only: the runtime logs and prints the translated message). ``command`` is
    the call refused, if known: a permission error names its key or channel from it."""
    message, cause = redact_text(str(exc)), type(exc).__name__
    error: BrokerError
    if isinstance(exc, _UNAVAILABLE):
        error = BrokerUnavailable(message, cause)
    elif isinstance(exc, redis.exceptions.OutOfMemoryError) or message.startswith("OOM "):
        error = RedisMemoryFull(message, cause)
    elif (refused := permission_error(message, command, cause)) is not None:
        error = refused
    else:
        error = BrokerCommandError(message, cause)
    error.__cause__ = exc
    return error


def _raise_translated(exc: BaseException, command: tuple[Any, ...] = ()) -> NoReturn:
    raise translated(exc, command) from exc


class RedisClient(aioredis.Redis):
    """redis-py's asyncio client, raising the runtime's errors (see the module docstring)."""

    is_cluster = False  # ClusterClient (cluster.py) stands in for it on Redis Cluster

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            if _is_idempotent(args[0]):
                return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
            with once():
                return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except _SCRIPT_RELOAD:
            raise
        except _TRANSLATED as exc:
            _raise_translated(exc, args)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return TranslatedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )

    def pubsub(self, **kwargs: Any) -> TranslatedPubSub:
        return TranslatedPubSub(
            self.connection_pool, event_dispatcher=self._event_dispatcher, **kwargs
        )


class TranslatedPipeline(Pipeline):
    """A pipeline whose ``execute`` raises the runtime's errors. Errors returned inside the
    reply list (``raise_on_error=False``) are translated into it as values too."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        is_idempotent = all(_is_idempotent(args[0]) for args, _ in self.command_stack)
        try:
            if is_idempotent:
                replies = await super().execute(raise_on_error)
            else:
                with once():
                    replies = await super().execute(raise_on_error)
        except _TRANSLATED as exc:
            _raise_translated(exc)
        return [_as_value(r) for r in replies]


def _as_value(reply: Any) -> Any:
    return translated(reply) if isinstance(reply, _TRANSLATED) else reply


class TranslatedPubSub(PubSub):
    """A subscription whose commands and reads raise the runtime's errors."""

    sent: tuple[Any, ...] = ()  # the last (UN)SUBSCRIBE: its refusal arrives as a reply

    async def execute_command(self, *args: Any) -> Any:
        self.sent = args
        try:
            return await super().execute_command(*args)
        except _TRANSLATED as exc:
            _raise_translated(exc, args)

    async def parse_response(self, block: bool = True, timeout: float = 0) -> Any:  # noqa: ASYNC109
        try:
            return await super().parse_response(block, timeout)
        except _TRANSLATED as exc:
            _raise_translated(exc, self.sent)


def connect(settings: RedisSettings, url: str) -> RedisClient:
    """A client whose every call has a timeout, and whose idempotent calls are retried on
    connection errors (the retry rule in the module docstring). A ``redis+cluster://``
    URL gives a ``ClusterClient`` (cluster.py), which answers the same calls."""
    if is_cluster_url(url):
        from runtime.queue.cluster import connect_cluster  # it builds on this module

        return cast("RedisClient", connect_cluster(settings, url))
    retry = OnceAwareRetry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=3)
    pool = FairConnectionPool.from_url(
        url,
        max_connections=settings.max_connections,
        wait_s=settings.timeout_s,
        socket_timeout=settings.timeout_s,
        socket_connect_timeout=settings.connect_timeout_s,
        retry=retry,
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        health_check_interval=30,
    )
    pool.connection_class = with_hiredis_packing(pool.connection_class)  # resp.py
    return cast("RedisClient", RedisClient.from_pool(pool))  # closing it closes its pool


async def close_pubsub(pubsub: PubSub) -> None:
    """Close a subscription without waiting on (or failing over) a broken connection."""
    with contextlib.suppress(BrokerUnavailable, OSError, TimeoutError):
        async with asyncio.timeout(1.0):
            await pubsub.aclose()  # type: ignore[no-untyped-call]
