"""Detects a Redis that lost its data (restarted without persistence, or flushed).

Every runtime remembers the value of ``{ns}:epoch``, a random token the first runtime to
find it missing writes (SET NX). The refresher reads it every ``metrics.refresh_s``; if it
is gone or changed, the data the runtime relied on is gone too: jobs accepted before are
no longer in Redis. That is logged at ERROR at once, counted in
``redis_data_loss_total``, and reported by ``/readyz`` (503, check ``redis_data``) for
``ALERT_S`` seconds, so an orchestrator and a human both notice; the runtime then goes on
serving with the new epoch (nothing it can do brings the lost jobs back).
"""

from __future__ import annotations

import logging
import os
import time

from runtime.queue.connection import RedisClient
from runtime.queue.keys import NamespaceKeys

log = logging.getLogger("runtime.epoch")
ALERT_S = 60.0


class EpochWatch:
    def __init__(self, redis: RedisClient, namespace: str, alert_s: float = ALERT_S) -> None:
        self._redis = redis
        self.key = NamespaceKeys(namespace).epoch
        self.alert_s = alert_s
        self.known: bytes | str | None = None
        self.lost_at: float | None = None
        self.losses = 0
        self.detail = ""

    async def check(self) -> bool:
        """Read the epoch; True when a loss of data was detected by this call."""
        value = await self._redis.get(self.key)
        lost = ""
        if value is None:
            # Safe to retry (connection.py's rule): NX, so only the first landing sets it.
            await self._redis.set(self.key, os.urandom(8).hex(), nx=True)
            value = await self._redis.get(self.key)
            if self.known is not None:
                lost = "its epoch key is gone"
        elif self.known is not None and value != self.known:
            lost = "its epoch key changed"
        self.known = value
        if not lost:
            return False
        self.lost_at = time.monotonic()
        self.losses += 1
        self.detail = (
            f"Redis lost its data ({lost}): it restarted without persistence or was "
            "flushed; jobs accepted before are gone from Redis and cannot be recovered "
            "by the runtime (check Redis persistence: appendonly yes)"
        )
        log.error("%s", self.detail)
        return True

    @property
    def problem(self) -> str | None:
        """The loss detected in the last ``alert_s`` seconds, for /readyz; else None."""
        if self.lost_at is not None and time.monotonic() - self.lost_at < self.alert_s:
            return self.detail
        return None
