"""The composition root: one aiohttp application that hosts the HTTP surface and the
dispatcher on one event loop. ``cleanup_ctx`` owns every long-lived resource, in order:
Redis (embedded or external) → broker → refresher → dispatcher → the hot-swap watcher
(deploy mode, ``--reload``). Nothing here needs Redis to be up: the runtime starts,
reports 503 on /readyz, and becomes ready when Redis answers.

Every long-lived task runs under a supervisor (the app's: refresher, result waiter,
watcher; the dispatcher's and each worker's): one that fails is logged, counted,
restarted within a second, and ``/readyz`` names it while it is down. Loops treat any
Redis error (unreachable, OOM, READONLY, NOPERM, ...) as weather: log, retry, recover by
themselves when Redis does.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from runtime.client import Producer
from runtime.config.redaction import redact_url
from runtime.config.registry import LiveRegistry, Registry
from runtime.config.schema import Settings
from runtime.deploy.store import DeployStore
from runtime.deploy.watcher import (
    DeployWatcher,
    HotSwap,
    Reloader,
    ServeMode,
    retire_snapshot,
)
from runtime.errors import BrokerError, BrokerUnavailable, ConfigError
from runtime.execution.dispatcher import Dispatcher
from runtime.observe.metrics import Metrics
from runtime.observe.supervisor import Supervisor, raise_if_cancelled
from runtime.observe.tracing import Tracing
from runtime.queue.backlog import BacklogReader
from runtime.queue.connection import connect
from runtime.queue.epoch import EpochWatch
from runtime.queue.instances import Instances
from runtime.queue.redis_config import RedisConfigWatch
from runtime.queue.sharded import ShardedBroker
from runtime.queue.waiter import ResultWaiter
from runtime.server import drain, health, jobs_api, limits, listen, middlewares, routes
from runtime.server.admission import memory_ratio
from runtime.server.appkeys import (
    BACKLOG_KEY,
    BROKER_KEY,
    DISPATCHER_KEY,
    EPOCH_KEY,
    GUARD_KEY,
    INSTANCES_KEY,
    MEMORY_RATIO_KEY,
    METRICS_KEY,
    MODE_KEY,
    PRODUCER_KEY,
    REDIS_CONFIG_KEY,
    REGISTRY_KEY,
    SETTINGS_KEY,
    SHUTDOWN_KEY,
    SUPERVISOR_KEY,
    SWAP_STATE_KEY,
    TOKEN_KEY,
    TRACING_KEY,
    WAITER_KEY,
)
from runtime.server.embedded import EmbeddedRedis

log = logging.getLogger("runtime.app")

TOKEN_FILE = "http-token"  # noqa: S105 — a file name, not a password
TASK_STOP_S = 2.0  # a task that swallows its cancellation is left behind after this

__all__ = ["BROKER_KEY", "DISPATCHER_KEY", "build_app", "serve", "token_path", "write_token"]


def token_path(settings: Settings) -> Path:
    """Where a generated token is written: beside the embedded Redis data folder."""
    return Path(settings.redis.embedded_dir).parent / TOKEN_FILE


def _token(settings: Settings) -> str:
    """The configured token, or a new random one (written by :func:`write_token` once
    the port is bound)."""
    return settings.http.token or secrets.token_urlsafe(32)


def write_token(settings: Settings, token: str) -> None:
    """Write a generated token where the CLI finds it (mode 0600). Only after the port is
    bound: a ``serve`` that fails to start must not replace the running one's token."""
    if settings.http.token:
        return
    path = token_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.replace(tmp, path)  # readers never see a half-written token
    log.info("no http.token configured: generated one for the /v1 API in %s", path)


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    embedded: EmbeddedRedis | None = None
    url = settings.redis.url
    if not url:
        embedded = EmbeddedRedis(settings.redis.embedded_dir)
        # On the loop's thread (it lives as long as the process): the server dies with
        # the thread that started it (embedded.py). Nothing is served yet to block.
        url = embedded.start()
    client = connect(settings.redis, url)
    broker = ShardedBroker(
        client,
        settings.namespace,
        keep_result_s=settings.worker.keep_result_s,
        block_s=settings.redis.block_s,
    )
    app[BROKER_KEY] = broker
    app[BACKLOG_KEY] = BacklogReader(client, settings.namespace)
    app[PRODUCER_KEY] = Producer(
        broker, app[REGISTRY_KEY], metrics=app[METRICS_KEY], tracing=app[TRACING_KEY]
    )
    app[INSTANCES_KEY] = Instances(client, settings.namespace, app[REGISTRY_KEY].names)
    app[EPOCH_KEY] = EpochWatch(client, settings.namespace)
    app[REDIS_CONFIG_KEY] = RedisConfigWatch(client, allow_eviction=settings.redis.allow_eviction)
    # It subscribes on its first wait.
    app[WAITER_KEY] = waiter = ResultWaiter(broker, app[SUPERVISOR_KEY])
    log.info("using Redis at %s", redact_url(url))
    try:
        yield
    finally:
        await waiter.close()
        with contextlib.suppress(BrokerError, TimeoutError):
            async with asyncio.timeout(1.0):
                await app[INSTANCES_KEY].leave()
        await client.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        app[TRACING_KEY].shutdown()


async def refresher_ctx(app: web.Application) -> AsyncIterator[None]:
    """Queue gauges, Redis latency and memory, and this instance's fleet heartbeat, every
    ``metrics.refresh_s`` in the background (a scrape never waits on Redis)."""
    supervisor = app[SUPERVISOR_KEY]
    supervisor.spawn("refresher", lambda: _refresh_loop(app))
    yield
    await supervisor.stop(TASK_STOP_S, names=["refresher"])


async def _refresh_loop(app: web.Application) -> None:
    settings = app[SETTINGS_KEY]
    interval = settings.metrics.refresh_s
    metrics = app[METRICS_KEY]
    last_error = 0.0
    while True:
        try:
            # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation
            # that races the inner call's completion, and this loop would never stop.
            async with asyncio.timeout(max(interval, 1.0)):
                await refresh_once(app)
        except (BrokerError, TimeoutError) as exc:
            raise_if_cancelled()  # a stop that redis-py turned into a timeout
            if isinstance(exc, (BrokerUnavailable, TimeoutError)):
                metrics.redis_up.set(0)
            if time.monotonic() - last_error > 5:
                last_error = time.monotonic()
                why = exc.describe() if isinstance(exc, BrokerError) else repr(exc)
                log.warning("metrics refresh failed (retrying every %gs): %s", interval, why)
        await asyncio.sleep(interval)


async def refresh_once(app: web.Application) -> None:
    """Reads first, writes last: a Redis refusing writes (OOM, READONLY) still updates the
    gauges and the memory ratio admission decides on, so both recover with Redis."""
    metrics = app[METRICS_KEY]
    broker = app[BROKER_KEY]
    started = time.perf_counter()
    await broker.ping()
    metrics.redis_latency.observe(time.perf_counter() - started)
    metrics.redis_up.set(1)
    metrics.redis_eviction_policy_ok.set((await app[REDIS_CONFIG_KEY].refresh()).gauge)
    app[MEMORY_RATIO_KEY][0] = memory_ratio(await broker.redis.info("memory"))
    for spec in app[REGISTRY_KEY]:
        metrics.set_queue(spec.name, await broker.stats(spec.name))
        backlog = await app[BACKLOG_KEY].read(spec.name, spec.options)
        if backlog is not None:  # else counted and logged by the reader; the gauges stay
            metrics.set_backlog(
                spec.name,
                schedulable=backlog.schedulable,
                held=backlog.held.items(),
                in_flight=backlog.in_flight,
                slots=spec.options.concurrency,
                oldest_ready_age_s=backlog.oldest_ready_age_s,
            )
    if await app[EPOCH_KEY].check():
        metrics.redis_data_loss.inc()
    window = max(3 * app[SETTINGS_KEY].metrics.refresh_s, 5.0)
    metrics.instances.set(await app[INSTANCES_KEY].beat(window))


async def dispatcher_ctx(app: web.Application) -> AsyncIterator[None]:
    dispatcher = Dispatcher(
        app[REGISTRY_KEY],
        app[BROKER_KEY],
        app[SETTINGS_KEY],
        metrics=app[METRICS_KEY],
        tracing=app[TRACING_KEY],
    )
    dispatcher.start()
    app[DISPATCHER_KEY] = dispatcher
    names = ", ".join(app[REGISTRY_KEY].names) or "none"
    log.info("dispatcher started; functions: %s", names)
    yield
    shutdown_grace_s = app[SETTINGS_KEY].worker.shutdown_grace_s
    registry = app[REGISTRY_KEY]
    specs = list(registry)
    grace_s = drain.drain_grace_s(shutdown_grace_s, specs)
    log.info(
        "draining: running jobs may finish for %s, then go back to their lanes; the "
        "process ends within %gs at the latest",
        drain.describe(shutdown_grace_s, specs),
        grace_s + drain.WATCHDOG_EXTRA_S,
    )
    await dispatcher.drain(grace_s)
    log.info("drained")


async def swap_ctx(app: web.Application) -> AsyncIterator[None]:
    """``--reload`` and deploy mode: the watcher that swaps new code in (watcher.py).
    Stopped before the dispatcher drains, so nothing is swapped during the drain."""
    mode = app[MODE_KEY]
    live = app[REGISTRY_KEY]
    if mode == "local" or not isinstance(live, LiveRegistry):
        yield
        return
    settings = app[SETTINGS_KEY]
    instances = app[INSTANCES_KEY]
    watcher: DeployWatcher | Reloader
    if mode == "reload":
        swap = HotSwap(settings, live, app[DISPATCHER_KEY], instances, retire_snapshot)
        watcher = Reloader(settings, Path(settings.functions_dir), swap, live)
    else:
        redis = app[BROKER_KEY].redis
        keep = settings.deploy.keep_versions
        store = DeployStore(redis, settings.namespace, keep_versions=keep)
        watcher = DeployWatcher(
            settings, store, HotSwap(settings, live, app[DISPATCHER_KEY], instances), instances
        )
        log.info("deploy mode: running the active deployment of namespace %r", settings.namespace)
    app[SWAP_STATE_KEY] = watcher.state
    supervisor = app[SUPERVISOR_KEY]
    name = f"{mode}-watcher"
    supervisor.spawn(name, watcher.run)
    yield
    # Bounded: a cancellation swallowed inside a Redis call must not hang the shutdown.
    await supervisor.stop(TASK_STOP_S, names=[name])
    if isinstance(watcher, DeployWatcher):
        await watcher.leave()


async def _on_shutdown(app: web.Application) -> None:
    app[SHUTDOWN_KEY].set()  # waiting invokes answer 503 with their job id at once


def build_app(
    settings: Settings,
    registry: Registry,
    *,
    tracing: Tracing | None = None,
    mode: ServeMode = "local",
) -> web.Application:
    guard = limits.ConnectionGuard(limits.effective_max_connections(settings.http.max_connections))
    app = web.Application(
        client_max_size=settings.http.max_body_bytes,
        handler_args=limits.handler_args(settings.http.header_timeout_s),
        middlewares=[
            middlewares.count_middleware,
            middlewares.errors_middleware,
            limits.requests_middleware(
                guard, limits.Concurrency(settings.http.max_concurrent_requests)
            ),
            middlewares.auth_middleware,  # before tracing: an unauthenticated call makes no span
            middlewares.tracing_middleware,
        ],
    )
    app[SETTINGS_KEY] = settings
    app[GUARD_KEY] = guard
    app[MODE_KEY] = mode
    # Swappable unless serving a fixed folder: every reader sees the current functions.
    app[REGISTRY_KEY] = registry if mode == "local" else LiveRegistry(registry)
    app[METRICS_KEY] = Metrics(registry.names)
    app[TRACING_KEY] = tracing or Tracing()
    app[TOKEN_KEY] = _token(settings)
    app[SHUTDOWN_KEY] = asyncio.Event()
    app[SUPERVISOR_KEY] = Supervisor("app")
    app[MEMORY_RATIO_KEY] = [0.0]
    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(refresher_ctx)
    app.cleanup_ctx.append(dispatcher_ctx)
    app.cleanup_ctx.append(swap_ctx)
    app.on_shutdown.append(_on_shutdown)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics_route)
    routes.add_routes(app)
    jobs_api.add_job_routes(app)
    if settings.ui.enabled:
        from runtime.server.console import add_console

        add_console(app)
    return app


def _event_loop_factory(choice: str) -> Any:
    """uvloop's loop (lower per-call overhead) for "uvloop", and for "auto" when it is
    installed; None (asyncio's own loop) otherwise."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                [
                    "event_loop = 'uvloop', but uvloop is not installed: "
                    "pip install uvloop, or set event_loop to 'auto' or 'asyncio'"
                ]
            ) from None
        return None
    return uvloop.new_event_loop


def serve(
    settings: Settings,
    registry: Registry,
    *,
    mode: ServeMode = "local",
    on_stop: Callable[[float], None] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT; aiohttp's runner then unwinds cleanup_ctx (the drain).
    ``on_stop`` is called as the stop begins (the first thing the runner does after the
    signal) with the drain's bound in seconds (drain.py), e.g. to arm a watchdog."""
    from runtime.observe.tracing import build_provider

    provider = build_provider(settings.tracing)
    if provider is not None:
        from opentelemetry import trace

        trace.set_tracer_provider(provider)  # so handlers' own spans nest under the job's
    app = build_app(settings, registry, tracing=Tracing(provider), mode=mode)
    if on_stop is not None:
        stop_hook = on_stop

        async def stopping(app: web.Application) -> None:
            grace_s = settings.worker.shutdown_grace_s
            registry = app[REGISTRY_KEY]
            stop_hook(drain.drain_grace_s(grace_s, list(registry)))

        app.on_shutdown.insert(0, stopping)
    # Everything loaded so far lives as long as the process: keep it out of the garbage
    # collector's full passes (shorter pauses, a steadier latency tail).
    gc.collect()
    gc.freeze()
    listen.run(
        app,
        app[GUARD_KEY],
        host=settings.http.host,
        port=settings.http.port,
        shutdown_timeout_s=settings.worker.shutdown_grace_s + 5,
        loop_factory=_event_loop_factory(settings.event_loop),
        on_bound=lambda: write_token(settings, app[TOKEN_KEY]),
    )
