"""The composition root: one aiohttp application that hosts the HTTP surface and the
dispatcher on one event loop. ``cleanup_ctx`` owns every long-lived resource, in order:
Redis (embedded or external) → broker → refresher → dispatcher → the hot-swap watcher
(deploy mode, ``--reload``). Nothing here needs Redis to be up: the runtime starts,
reports 503 on /readyz, and becomes ready when Redis answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
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
    SwapState,
    retire_snapshot,
)
from runtime.errors import BrokerUnavailable, ConfigError
from runtime.execution.dispatcher import Dispatcher
from runtime.observe.metrics import CONTENT_TYPE_LATEST, Metrics
from runtime.observe.tracing import Tracing
from runtime.queue.broker import RedisBroker
from runtime.queue.connection import connect
from runtime.queue.epoch import EpochWatch
from runtime.queue.instances import Instances
from runtime.queue.redis_config import RedisConfigWatch
from runtime.queue.waiter import ResultWaiter
from runtime.server import middlewares, routes
from runtime.server.appkeys import (
    BROKER_KEY,
    DISPATCHER_KEY,
    EPOCH_KEY,
    INSTANCES_KEY,
    MEMORY_RATIO_KEY,
    METRICS_KEY,
    MODE_KEY,
    PRODUCER_KEY,
    REDIS_CONFIG_KEY,
    REGISTRY_KEY,
    SETTINGS_KEY,
    SHUTDOWN_KEY,
    SWAP_STATE_KEY,
    TOKEN_KEY,
    TRACING_KEY,
    WAITER_KEY,
)
from runtime.server.embedded import EmbeddedRedis

log = logging.getLogger("runtime.app")

READY_PING_TIMEOUT_S = 1.0
TOKEN_FILE = "http-token"

__all__ = ["BROKER_KEY", "DISPATCHER_KEY", "build_app", "serve", "token_path"]


def token_path(settings: Settings) -> Path:
    """Where a generated token is written: beside the embedded Redis data folder."""
    return Path(settings.redis.embedded_dir).parent / TOKEN_FILE


def _token(settings: Settings) -> str:
    if settings.http.token:
        return settings.http.token
    path = token_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    log.info("no http.token configured: generated one for the /v1 API in %s", path)
    return token


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    embedded: EmbeddedRedis | None = None
    url = settings.redis.url
    if not url:
        embedded = EmbeddedRedis(settings.redis.embedded_dir)
        url = await asyncio.to_thread(embedded.start)
    client = connect(settings.redis, url)
    broker = RedisBroker(
        client,
        settings.namespace,
        keep_result_s=settings.worker.keep_result_s,
        block_s=settings.redis.block_s,
    )
    app[BROKER_KEY] = broker
    app[PRODUCER_KEY] = Producer(
        broker, app[REGISTRY_KEY], metrics=app[METRICS_KEY], tracing=app[TRACING_KEY]
    )
    app[INSTANCES_KEY] = Instances(client, settings.namespace, app[REGISTRY_KEY].names)
    app[EPOCH_KEY] = EpochWatch(client, settings.namespace)
    app[REDIS_CONFIG_KEY] = RedisConfigWatch(client, allow_eviction=settings.redis.allow_eviction)
    app[WAITER_KEY] = waiter = ResultWaiter(broker)  # subscribes on its first wait
    log.info("using Redis at %s", redact_url(url))
    try:
        yield
    finally:
        await waiter.close()
        with contextlib.suppress(BrokerUnavailable, TimeoutError):
            async with asyncio.timeout(1.0):
                await app[INSTANCES_KEY].leave()
        await client.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        app[TRACING_KEY].shutdown()


async def refresher_ctx(app: web.Application) -> AsyncIterator[None]:
    """Queue gauges, Redis latency and memory, and this instance's fleet heartbeat, every
    ``metrics.refresh_s`` in the background (a scrape never waits on Redis)."""
    stop = asyncio.Event()
    task = asyncio.create_task(_refresh_loop(app, stop), name="refresher")
    yield
    stop.set()  # the loop ends even if a cancellation is swallowed inside a Redis call
    task.cancel()
    await asyncio.wait({task}, timeout=2.0)


async def _refresh_loop(app: web.Application, stop: asyncio.Event) -> None:
    settings = app[SETTINGS_KEY]
    interval = settings.metrics.refresh_s
    metrics = app[METRICS_KEY]
    last_error = 0.0
    while not stop.is_set():
        try:
            # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation
            # that races the inner call's completion, and this loop would never stop.
            async with asyncio.timeout(max(interval, 1.0)):
                await refresh_once(app)
        except (BrokerUnavailable, TimeoutError) as exc:
            metrics.redis_up.set(0)
            if time.monotonic() - last_error > 5:
                last_error = time.monotonic()
                log.warning("metrics refresh: Redis unavailable: %s", exc)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await stop.wait()


async def refresh_once(app: web.Application) -> None:
    metrics = app[METRICS_KEY]
    broker = app[BROKER_KEY]
    started = time.perf_counter()
    await broker.ping()
    metrics.redis_latency.observe(time.perf_counter() - started)
    metrics.redis_up.set(1)
    metrics.redis_eviction_policy_ok.set((await app[REDIS_CONFIG_KEY].refresh()).gauge)
    if await app[EPOCH_KEY].check():
        metrics.redis_data_loss.inc()
    for name in app[REGISTRY_KEY].names:
        metrics.set_queue(name, await broker.stats(name))
    memory = await broker.redis.info("memory")
    maxmemory = int(memory.get("maxmemory", 0) or 0)
    used = int(memory.get("used_memory", 0) or 0)
    app[MEMORY_RATIO_KEY][0] = used / maxmemory if maxmemory else 0.0
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
    grace_s = app[SETTINGS_KEY].worker.shutdown_grace_s
    log.info("draining: finishing in-flight jobs for up to %gs", grace_s)
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
    task = asyncio.create_task(watcher.run(), name=f"{mode}-watcher")
    task.add_done_callback(lambda t: _watcher_ended(t, watcher.state))
    yield
    task.cancel()
    # Bounded: a cancellation swallowed inside a Redis call must not hang the shutdown.
    await asyncio.wait({task}, timeout=2.0)
    if isinstance(watcher, DeployWatcher):
        await watcher.leave()


def _watcher_ended(task: asyncio.Task[None], state: SwapState) -> None:
    if not task.cancelled() and task.exception() is not None:
        state.error = f"the watcher stopped: {task.exception()!r}"[:300]
        log.error("%s", state.error, exc_info=task.exception())


async def _on_shutdown(app: web.Application) -> None:
    app[SHUTDOWN_KEY].set()  # waiting invokes answer 503 with their job id at once


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    checks: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    try:
        async with asyncio.timeout(READY_PING_TIMEOUT_S):
            await app[BROKER_KEY].ping()
        latency_ms = round((time.perf_counter() - started) * 1e3, 2)
        checks["redis"] = {"ok": True, "latency_ms": latency_ms}
    except BrokerUnavailable as exc:
        checks["redis"] = {"ok": False, "error": exc.describe()[:300]}
    except TimeoutError as exc:
        checks["redis"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    lost = app[EPOCH_KEY].problem
    if lost is not None:
        checks["redis_data"] = {"ok": False, "error": lost}
    redis_config = app[REDIS_CONFIG_KEY].verdict  # None until the first refresh read it
    if redis_config is not None:
        checks["redis_config"] = redis_config.body()
    registry = app[REGISTRY_KEY]
    checks["registry"] = {"ok": True, "functions": len(registry)}
    dispatcher = app.get(DISPATCHER_KEY)
    running = dispatcher is not None and dispatcher.is_running
    checks["dispatcher"] = {"ok": running}
    if dispatcher is not None:
        checks["dispatcher"]["running_jobs"] = dispatcher.running_jobs
        # An open breaker is a function's trouble, not the instance's: reported, still ready.
        breakers = {
            name: w.breaker_state
            for name, w in dispatcher.workers.items()
            if w.breaker_state is not None
        }
        if breakers:
            checks["dispatcher"]["circuit_breakers"] = breakers
    swap_state = app.get(SWAP_STATE_KEY)
    if swap_state is not None:
        # A refused version is reported here but is not unready: the older one serves.
        checks["deployment"] = swap_state.body()
    ready = all(c["ok"] for c in checks.values())
    body = {"status": "ready" if ready else "unready", "checks": checks}
    return web.json_response(body, status=200 if ready else 503)


async def metrics_route(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].exposition()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def build_app(
    settings: Settings,
    registry: Registry,
    *,
    tracing: Tracing | None = None,
    mode: ServeMode = "local",
) -> web.Application:
    app = web.Application(
        client_max_size=settings.http.max_body_bytes,
        middlewares=[
            middlewares.errors_middleware,
            middlewares.auth_middleware,  # before tracing: an unauthenticated call makes no span
            middlewares.tracing_middleware,
        ],
    )
    app[SETTINGS_KEY] = settings
    app[MODE_KEY] = mode
    # Swappable unless serving a fixed folder: every reader sees the current functions.
    app[REGISTRY_KEY] = registry if mode == "local" else LiveRegistry(registry)
    app[METRICS_KEY] = Metrics(registry.names)
    app[TRACING_KEY] = tracing or Tracing()
    app[TOKEN_KEY] = _token(settings)
    app[SHUTDOWN_KEY] = asyncio.Event()
    app[MEMORY_RATIO_KEY] = [0.0]
    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(refresher_ctx)
    app.cleanup_ctx.append(dispatcher_ctx)
    app.cleanup_ctx.append(swap_ctx)
    app.on_shutdown.append(_on_shutdown)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_route)
    routes.add_routes(app)
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


def serve(settings: Settings, registry: Registry, *, mode: ServeMode = "local") -> None:
    """Run until SIGTERM/SIGINT; aiohttp's runner then unwinds cleanup_ctx (the drain)."""
    from runtime.observe.tracing import build_provider

    provider = build_provider(settings.tracing)
    if provider is not None:
        from opentelemetry import trace

        trace.set_tracer_provider(provider)  # so handlers' own spans nest under the job's
    app = build_app(settings, registry, tracing=Tracing(provider), mode=mode)
    # Everything loaded so far lives as long as the process: keep it out of the garbage
    # collector's full passes (shorter pauses, a steadier latency tail).
    gc.collect()
    gc.freeze()
    loop_factory = _event_loop_factory(settings.event_loop)
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(
            app,
            loop=loop_factory() if loop_factory is not None else None,
            host=settings.http.host,
            port=settings.http.port,
            print=lambda msg: log.info("%s", msg.strip()),
            access_log=None,
            shutdown_timeout=settings.worker.shutdown_grace_s + 5,
        )
