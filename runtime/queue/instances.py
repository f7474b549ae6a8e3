"""The fleet registry: each runtime instance beats every ``metrics.refresh_s`` into
``{ns}:instances`` (id → last beat, Redis time) and ``{ns}:instances:info`` (id → JSON:
host, pid, version, functions, started). Instances silent for ten windows are pruned.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis

from runtime.queue import scripts
from runtime.queue.connection import RedisClient
from runtime.queue.keys import NamespaceKeys
from runtime.version import package_version


class InstanceInfo(msgspec.Struct):
    id: str
    host: str
    pid: int
    version: str
    functions: list[str]
    started_at: float  # unix seconds


def registry_keys(namespace: str) -> tuple[str, str]:
    """The fleet registry: (id -> last beat zset, id -> info JSON hash)."""
    keys = NamespaceKeys(namespace)
    return keys.instances, keys.instances_info


async def live_instances(
    redis: aioredis.Redis, namespace: str, window_s: float
) -> list[dict[str, Any]]:
    """The instances that beat within the window, with their info and last beat age."""
    zset, info_key = registry_keys(namespace)
    now_s, now_us = await redis.time()
    now_ms = int(now_s) * 1000 + int(now_us) // 1000
    beats = cast(
        "list[tuple[bytes, float]]",
        await redis.zrangebyscore(zset, now_ms - round(window_s * 1000), "+inf", withscores=True),
    )
    if not beats:
        return []
    infos = await redis.hmget(info_key, [member for member, _ in beats])
    out = []
    for (member, score), raw in zip(beats, infos, strict=True):
        info: dict[str, Any] = msgspec.json.decode(raw) if raw else {"id": member.decode()}
        info["last_beat_s"] = round((now_ms - score) / 1000, 3)
        out.append(info)
    return out


class Instances:
    def __init__(self, redis: RedisClient, namespace: str, functions: list[str]) -> None:
        self._redis = redis
        self._namespace = namespace
        self.zset, self.info_key = registry_keys(namespace)
        host = socket.gethostname()
        self.info = InstanceInfo(
            id=f"{host}-{os.getpid()}-{os.urandom(3).hex()}",
            host=host,
            pid=os.getpid(),
            version=package_version(),
            functions=sorted(functions),
            started_at=time.time(),
        )
        self._info_json = msgspec.json.encode(self.info)
        self._script = scripts.register(redis, "instance")

    def set_functions(self, functions: list[str]) -> None:
        """After a hot swap: the next beat tells the fleet the new list."""
        self.info.functions = sorted(functions)
        self._info_json = msgspec.json.encode(self.info)

    async def beat(self, window_s: float) -> int:
        """Record this instance's beat; returns how many instances are live."""
        live = await self._script(
            keys=[self.zset, self.info_key],
            args=[self.info.id, self._info_json, round(window_s * 1000)],
        )
        return int(live)

    async def live(self, window_s: float) -> list[dict[str, Any]]:
        return await live_instances(self._redis, self._namespace, window_s)

    async def leave(self) -> None:
        """Remove this instance at a clean shutdown (a crashed one ages out)."""
        pipe = self._redis.pipeline(transaction=True)  # removals: safe to retry
        pipe.zrem(self.zset, self.info.id)
        pipe.hdel(self.info_key, self.info.id)
        await pipe.execute()
