"""A function's backlog as an autoscaler sees it: ready jobs split into those that could
start now (schedulable) and those held back by a limit (the function's rate limit, its
fleet ``max_in_flight`` cap, an open circuit breaker), the live leases, and how long the
oldest ready job has waited, all on Redis's clock.

One read-only script call per function (``lua/backlog.lua``, run with ``EVALSHA_RO`` so a
read-only Redis user may run it); nothing here is on a job's path. The refresher
(server/app.py) calls it every ``metrics.refresh_s`` for the gauges, ``GET /v1/scale``
once per request.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from runtime.errors import BrokerPermissionError
from runtime.function import FunctionOptions
from runtime.jobs.records import Invalid, as_int
from runtime.observe import rejects
from runtime.queue import scripts
from runtime.queue.connection import RedisClient
from runtime.queue.keys import FunctionKeys, NamespaceKeys
from runtime.queue.shards import cap_share, rate_share, shard_name

HeldBy = Literal["breaker", "max_in_flight", "rate_limit"]
HELD_REASONS: tuple[HeldBy, ...] = ("breaker", "max_in_flight", "rate_limit")
REPLY_FIELDS = 7


class Backlog(NamedTuple):
    """One function's backlog at ``now_ms`` (Redis time)."""

    now_ms: int
    ready: int  # the lanes plus the delayed jobs already due
    in_flight: int  # live leases, fleet-wide
    held: dict[HeldBy, int]  # ready jobs a limit keeps from starting now, by limit
    oldest_ready_ms: int | None  # when the oldest ready job became ready; None: none

    @property
    def schedulable(self) -> int:
        """Ready jobs that could start now, were there free slots."""
        return self.ready - sum(self.held.values())

    @property
    def held_total(self) -> int:
        return sum(self.held.values())

    @property
    def oldest_ready_age_s(self) -> float:
        """Seconds the oldest ready job has waited (0 when nothing is ready)."""
        if self.oldest_ready_ms is None:
            return 0.0
        return max(0.0, (self.now_ms - self.oldest_ready_ms) / 1000)


class BacklogReader:
    """The backlog script of one namespace, on one client."""

    def __init__(self, client: RedisClient, namespace: str) -> None:
        self.namespace = namespace
        self._client = client
        self._script = scripts.register_read_only(client, "backlog")
        self._keys: dict[str, FunctionKeys] = {}
        self._shards_key = NamespaceKeys(namespace).shards

    async def read(self, function: str, options: FunctionOptions) -> Backlog | None:
        """The backlog of ``function`` under its ``options`` (cap, rate, breaker); None
        (counted in ``runtime_inputs_rejected{source="backlog_reply"}``) when Redis's
        reply does not parse. A sharded function's is the sum of its shards' (every
        shard ever used), each under its part of the limits (shards.py)."""
        shards = options.shards
        try:
            raw = await self._client.zscore(self._shards_key, function)
        except BrokerPermissionError:
            raw = None  # a user set up before sharded functions: its configured count
        if isinstance(raw, int | float) and 1 <= raw < 1_000:
            shards = max(shards, int(raw))
        parts = []
        for shard in range(shards):
            part = await self._read_shard(shard_name(function, shard), options, shard, shards)
            if part is None:
                return None
            parts.append(part)
        return parts[0] if len(parts) == 1 else add_backlogs(parts)

    async def _read_shard(
        self, name: str, options: FunctionOptions, shard: int, shards: int
    ) -> Backlog | None:
        k = self._keys.get(name)
        if k is None:
            k = self._keys[name] = FunctionKeys(self.namespace, name)
        cooldown_ms = round(options.breaker.cooldown_s * 1000) if options.breaker else 0
        interval, burst = rate_share(options.rate_interval_ms, options.rate_burst, shard, shards)
        reply = await self._script(
            [*k.lanes, k.delayed, k.leased, k.rate, k.breaker],
            [
                k.prefix,
                cap_share(options.max_in_flight, shard, shards),
                f"{interval:.3f}",
                burst,
                cooldown_ms,
            ],
        )
        return parse_backlog(reply)


def add_backlogs(parts: list[Backlog]) -> Backlog:
    """The backlog of a sharded function: its shards' added (the oldest: the earliest)."""
    held: dict[HeldBy, int] = {r: sum(p.held[r] for p in parts) for r in HELD_REASONS}
    oldest = [p.oldest_ready_ms for p in parts if p.oldest_ready_ms is not None]
    return Backlog(
        max(p.now_ms for p in parts),
        sum(p.ready for p in parts),
        sum(p.in_flight for p in parts),
        held,
        min(oldest) if oldest else None,
    )


def parse_backlog(reply: object) -> Backlog | None:
    """``lua/backlog.lua``'s reply, checked: seven integers, none negative but the last
    (-1: nothing ready), the held counts within the ready count."""
    if not isinstance(reply, list) or len(reply) != REPLY_FIELDS:
        rejects.reject("backlog_reply", rejects.sample(reply))
        return None
    values = [as_int(raw, low=-1) for raw in reply]
    ints = [v for v in values if not isinstance(v, Invalid)]
    if len(ints) != REPLY_FIELDS:
        rejects.reject("backlog_reply", rejects.sample(reply))
        return None
    now, ready, in_flight, breaker, cap, rate, oldest = ints
    if min(now, ready, in_flight, breaker, cap, rate) < 0 or breaker + cap + rate > ready:
        rejects.reject("backlog_reply", rejects.sample(reply))
        return None
    held: dict[HeldBy, int] = {"breaker": breaker, "max_in_flight": cap, "rate_limit": rate}
    return Backlog(now, ready, in_flight, held, None if oldest < 0 else oldest)
