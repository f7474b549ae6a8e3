"""Typed keys of the aiohttp application's state, shared by app.py and http_api.py."""

from __future__ import annotations

import asyncio

from aiohttp import web

from runtime.client import Producer
from runtime.config.registry import Registry
from runtime.config.schema import Settings
from runtime.deploy.watcher import ServeMode, SwapState
from runtime.execution.dispatcher import Dispatcher
from runtime.observe.metrics import Metrics
from runtime.observe.supervisor import Supervisor
from runtime.observe.tracing import Tracing
from runtime.queue.backlog import BacklogReader
from runtime.queue.broker import RedisBroker
from runtime.queue.epoch import EpochWatch
from runtime.queue.instances import Instances
from runtime.queue.redis_config import RedisConfigWatch
from runtime.queue.waiter import ResultWaiter
from runtime.server.limits import ConnectionGuard

SETTINGS_KEY = web.AppKey("settings", Settings)
REGISTRY_KEY = web.AppKey("registry", Registry)
BROKER_KEY = web.AppKey("broker", RedisBroker)
BACKLOG_KEY = web.AppKey("backlog", BacklogReader)  # the autoscaling reads (scale.py)
PRODUCER_KEY = web.AppKey("producer", Producer)
DISPATCHER_KEY = web.AppKey("dispatcher", Dispatcher)
METRICS_KEY = web.AppKey("metrics", Metrics)
TRACING_KEY = web.AppKey("tracing", Tracing)
INSTANCES_KEY = web.AppKey("instances", Instances)
TOKEN_KEY = web.AppKey("token", str)
EPOCH_KEY = web.AppKey("epoch", EpochWatch)
REDIS_CONFIG_KEY = web.AppKey("redis_config", RedisConfigWatch)
WAITER_KEY = web.AppKey("waiter", ResultWaiter)
SHUTDOWN_KEY = web.AppKey("shutdown", asyncio.Event)
# The app's own long-lived tasks: the refresher, the result waiter, the hot-swap watcher
# (the dispatcher and each worker have their own).
SUPERVISOR_KEY = web.AppKey("supervisor", Supervisor)
# [used_memory / maxmemory] as last seen by the refresher (a list so it can be updated)
MEMORY_RATIO_KEY = web.AppKey("memory_ratio", list[float])
MODE_KEY: web.AppKey[ServeMode] = web.AppKey("mode")
# What the hot-swap watcher runs and refused (deploy mode, --reload); absent otherwise.
SWAP_STATE_KEY = web.AppKey("swap_state", SwapState)
# Open connections against http.max_connections (limits.py); the listener uses it.
GUARD_KEY = web.AppKey("connection_guard", ConnectionGuard)
