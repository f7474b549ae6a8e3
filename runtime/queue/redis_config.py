"""Whether Redis keeps what the runtime writes: its ``maxmemory-policy``.

Every key of the runtime (job hashes, lanes, leases, results) must stay until the runtime
deletes it. Under any policy but ``noeviction``, Redis deletes keys when it is full: job
records vanish under their lane ids, results disappear, and jobs are dead-lettered as
undecodable. Found: 6,288 of 10,001 keys evicted under ``allkeys-lru``, and nothing said
why. So the policy is read at start and at every metrics refresh, and one that may evict is
an ERROR log line, a failing ``redis_config`` check on ``/readyz``, and the gauge
``redis_eviction_policy_ok`` at 0, unless ``redis.allow_eviction`` accepts the risk.

The judgement is a pure function of the replies (``policy_from_config``,
``policy_from_info``, ``judge``); ``read_policy`` is the one reader, and
``RedisConfigWatch`` keeps the last verdict and rate-limits its log lines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runtime.errors import BrokerCommandError
from runtime.queue.connection import RedisClient

log = logging.getLogger("runtime.redis_config")

SAFE_POLICY = "noeviction"
FIX = (
    f"run CONFIG SET maxmemory-policy {SAFE_POLICY} (and set it in redis.conf), or accept "
    "the risk with redis.allow_eviction = true (RUNTIME_REDIS__ALLOW_EVICTION=true)"
)
LOG_EVERY_S = 300.0
MAX_POLICY_CHARS = 64


@dataclass(frozen=True)
class Verdict:
    """What the check reports: ``policy`` None when it could not be read."""

    policy: str | None
    is_ok: bool
    note: str

    @property
    def gauge(self) -> int:
        """1 noeviction, 0 a policy that may evict (accepted or not), -1 unknown."""
        if self.policy is None:
            return -1
        return 1 if self.policy == SAFE_POLICY else 0

    def body(self) -> dict[str, Any]:
        """The ``redis_config`` check of ``/readyz``."""
        key = "note" if self.is_ok else "error"
        return {"ok": self.is_ok, "maxmemory_policy": self.policy, key: self.note}


def _text(value: object) -> str | None:
    """A policy name from a reply value, or None when it is not a short word."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_POLICY_CHARS:
        return None
    value = value.strip().lower()
    return value if value.replace("-", "").replace("_", "").isalnum() else None


def policy_from_config(reply: object) -> str | None:
    """The policy from ``CONFIG GET maxmemory-policy`` (a dict, or a flat list)."""
    if isinstance(reply, list | tuple) and len(reply) == 2:
        reply = {reply[0]: reply[1]}
    if not isinstance(reply, dict):
        return None
    for key, value in reply.items():
        if _text(key) == "maxmemory-policy":
            return _text(value)
    return None


def policy_from_info(reply: object) -> str | None:
    """The policy from ``INFO memory`` (redis-py's dict of its fields)."""
    if not isinstance(reply, dict):
        return None
    for key, value in reply.items():
        if _text(key) == "maxmemory_policy":
            return _text(value)
    return None


def judge(policy: str | None, *, allow_eviction: bool) -> Verdict:
    if policy is None:
        note = "maxmemory-policy is unreadable (CONFIG and INFO refused); not checked"
        return Verdict(None, True, note)
    if policy == SAFE_POLICY:
        return Verdict(policy, True, f"maxmemory-policy is {SAFE_POLICY}")
    risk = (
        f"Redis maxmemory-policy is {policy}: when memory is full Redis deletes keys, "
        "and jobs and results are lost"
    )
    if allow_eviction:
        return Verdict(policy, True, f"{risk} (accepted: redis.allow_eviction = true)")
    return Verdict(policy, False, f"{risk}; {FIX}")


async def read_policy(redis: RedisClient) -> str | None:
    """The policy from ``CONFIG GET``, else from ``INFO memory`` (managed Redis, or an ACL
    without +config), else None. ``BrokerUnavailable`` propagates: Redis is down, not
    misconfigured."""
    try:
        policy = policy_from_config(await redis.config_get("maxmemory-policy"))
    except BrokerCommandError:
        policy = None
    if policy is not None:
        return policy
    try:
        return policy_from_info(await redis.info("memory"))
    except BrokerCommandError:
        return None


class RedisConfigWatch:
    """The last verdict (None before the first read) and its log lines: an evicting policy
    is an ERROR at once and then every ``log_every_s``; an accepted one, or an unreadable
    one, a WARNING once (again only after it changes)."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        allow_eviction: bool,
        log_every_s: float = LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._allow = allow_eviction
        self._every_s = log_every_s
        self._clock = clock
        self.verdict: Verdict | None = None
        self._logged_at: float | None = None

    async def refresh(self) -> Verdict:
        return self.observe(await read_policy(self._redis))

    def observe(self, policy: str | None) -> Verdict:
        verdict = judge(policy, allow_eviction=self._allow)
        changed = self.verdict is None or verdict != self.verdict
        self.verdict = verdict
        now = self._clock()
        if changed:
            self._logged_at = None
        if verdict.policy == SAFE_POLICY:
            return verdict
        if not verdict.is_ok:
            if self._logged_at is None or now - self._logged_at >= self._every_s:
                self._logged_at = now
                log.error("%s", verdict.note)
        elif self._logged_at is None:
            self._logged_at = now
            log.warning("%s", verdict.note)
        return verdict
