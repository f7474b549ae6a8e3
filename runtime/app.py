"""The composition root: one aiohttp application that hosts the HTTP surface and the
dispatcher on one event loop. ``cleanup_ctx`` owns every long-lived resource, in order:
Redis (embedded or external) → broker → dispatcher. Nothing here needs Redis to be up:
the runtime starts, reports 503 on /readyz, and becomes ready when Redis answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from runtime.broker import REDIS_ERRORS, RedisBroker, connect
from runtime.dispatcher import Dispatcher
from runtime.embedded import EmbeddedRedis
from runtime.registry import Registry
from runtime.settings import Settings, redact_url

log = logging.getLogger("runtime.app")

SETTINGS_KEY = web.AppKey("settings", Settings)
REGISTRY_KEY = web.AppKey("registry", Registry)
BROKER_KEY = web.AppKey("broker", RedisBroker)
DISPATCHER_KEY = web.AppKey("dispatcher", Dispatcher)
READY_PING_TIMEOUT_S = 1.0


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    embedded: EmbeddedRedis | None = None
    url = settings.redis.url
    if not url:
        embedded = EmbeddedRedis(settings.redis.embedded_dir)
        url = await asyncio.to_thread(embedded.start)
    client = connect(settings.redis, url)
    app[BROKER_KEY] = RedisBroker(
        client,
        settings.namespace,
        keep_result_s=settings.worker.keep_result_s,
        block_s=max(0.05, settings.redis.timeout_s * 0.8),
    )
    log.info("using Redis at %s", redact_url(url))
    try:
        yield
    finally:
        await client.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


async def dispatcher_ctx(app: web.Application) -> AsyncIterator[None]:
    dispatcher = Dispatcher(app[REGISTRY_KEY], app[BROKER_KEY], app[SETTINGS_KEY])
    dispatcher.start()
    app[DISPATCHER_KEY] = dispatcher
    names = ", ".join(app[REGISTRY_KEY].names) or "none"
    log.info("dispatcher started; functions: %s", names)
    yield
    grace_s = app[SETTINGS_KEY].worker.shutdown_grace_s
    log.info("draining: finishing in-flight jobs for up to %gs", grace_s)
    await dispatcher.drain(grace_s)
    log.info("drained")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    checks: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    try:
        await asyncio.wait_for(app[BROKER_KEY].ping(), READY_PING_TIMEOUT_S)
        latency_ms = round((time.perf_counter() - started) * 1e3, 2)
        checks["redis"] = {"ok": True, "latency_ms": latency_ms}
    except (*REDIS_ERRORS, TimeoutError) as exc:
        checks["redis"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    registry = app[REGISTRY_KEY]
    checks["registry"] = {"ok": True, "functions": len(registry)}
    dispatcher = app.get(DISPATCHER_KEY)
    running = dispatcher is not None and dispatcher.is_running
    checks["dispatcher"] = {"ok": running}
    if dispatcher is not None:
        checks["dispatcher"]["running_jobs"] = sum(w.running for w in dispatcher.workers.values())
    ready = all(c["ok"] for c in checks.values())
    body = {"status": "ready" if ready else "unready", "checks": checks}
    return web.json_response(body, status=200 if ready else 503)


def build_app(settings: Settings, registry: Registry) -> web.Application:
    app = web.Application()
    app[SETTINGS_KEY] = settings
    app[REGISTRY_KEY] = registry
    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(dispatcher_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def serve(settings: Settings, registry: Registry) -> None:
    """Run until SIGTERM/SIGINT; aiohttp's runner then unwinds cleanup_ctx (the drain)."""
    app = build_app(settings, registry)
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(
            app,
            host=settings.http.host,
            port=settings.http.port,
            print=lambda msg: log.info("%s", msg.strip()),
            access_log=None,
            shutdown_timeout=settings.worker.shutdown_grace_s + 5,
        )
