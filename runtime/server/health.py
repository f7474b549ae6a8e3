"""The probes: ``/healthz`` (the process answers), ``/readyz`` (each check of what this
instance needs to do its work, 503 while one fails) and ``/metrics`` (Prometheus).

``/readyz`` checks: ``redis`` (a PING within ``READY_PING_TIMEOUT_S``), ``redis_data``
(only when the epoch says Redis lost its data), ``redis_config`` (the eviction policy,
once read), ``registry``, ``dispatcher`` (its loops; those down now are named), ``tasks``
(the app's supervised tasks: refresher, result waiter, watcher) and ``deployment`` (in
deploy and reload modes; a refused version is reported but does not make it unready).
The body also names the package ``version`` this instance runs (``runtime.version``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from runtime.errors import BrokerUnavailable
from runtime.observe.metrics import CONTENT_TYPE_LATEST
from runtime.server.appkeys import (
    BROKER_KEY,
    DISPATCHER_KEY,
    EPOCH_KEY,
    METRICS_KEY,
    REDIS_CONFIG_KEY,
    REGISTRY_KEY,
    SUPERVISOR_KEY,
    SWAP_STATE_KEY,
)
from runtime.version import package_version

READY_PING_TIMEOUT_S = 1.0


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
        if down := dispatcher.down:  # restarting now: named, with the error
            checks["dispatcher"]["down"] = down
        # An open breaker is a function's trouble, not the instance's: reported, still ready.
        breakers = {
            name: w.breaker_state
            for name, w in dispatcher.workers.items()
            if w.breaker_state is not None
        }
        if breakers:
            checks["dispatcher"]["circuit_breakers"] = breakers
    down = app[SUPERVISOR_KEY].down  # the refresher, the result waiter, the watcher
    checks["tasks"] = {"ok": not down, **({"down": down} if down else {})}
    swap_state = app.get(SWAP_STATE_KEY)
    if swap_state is not None:
        # A refused version is reported here but is not unready: the older one serves.
        checks["deployment"] = swap_state.body()
    ready = all(c["ok"] for c in checks.values())
    body = {
        "status": "ready" if ready else "unready",
        "version": package_version(),
        "checks": checks,
    }
    return web.json_response(body, status=200 if ready else 503)


async def metrics_route(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].exposition()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
