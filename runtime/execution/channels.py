"""The channels the dispatcher's listener subscribes: the wake channel and each worker's
handoff channel (dispatcher.py). On one Redis each is one channel; on Redis Cluster each is
one per shard of each served function (its scripts publish in the shard's own slot), for
every shard still claimed: the configured count, or the highest ever recorded when above
it (a lowered count leaves jobs, and old producers, in the shards above it)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from runtime.errors import BrokerError
from runtime.queue.broker import RedisBroker
from runtime.queue.connection import TranslatedPubSub
from runtime.queue.keys import shard_channel
from runtime.queue.sharded_reads import ShardedQueries
from runtime.queue.shards import shard_name

if TYPE_CHECKING:
    from runtime.execution.worker import FunctionWorker

log = logging.getLogger("runtime.dispatcher")


async def shard_counts(
    broker: RedisBroker, workers: Mapping[str, FunctionWorker], last: dict[str, int]
) -> dict[str, int]:
    """On a cluster, each served function's shards to listen on (``ShardedQueries.read_shards``:
    a ZSCORE per function every COUNT_TTL_S), kept in ``last``; on one Redis, none."""
    if not broker.redis.is_cluster or not isinstance(broker, ShardedQueries):
        return {}
    for name in workers:
        try:
            last[name] = await broker.read_shards(name)
        except BrokerError as exc:  # the last count read stands; the claims fail too
            log.debug("reading %s's shard count failed: %r", name, exc)
    return last


def handoffs(
    by_channel: dict[bytes, FunctionWorker],
    broker: RedisBroker,
    workers: Mapping[str, FunctionWorker],
    counts: Mapping[str, int],
) -> dict[bytes, FunctionWorker]:
    """``by_channel`` with each worker's handoff channel in each shard it claims (those
    above the configured count too: counts, on a cluster)."""
    for worker in workers.values() if counts else ():
        for name in shard_names(worker.name, counts.get(worker.name, 1)):
            by_channel.setdefault(listened(broker, worker.handoff_channel, name), worker)
    return by_channel


def wake_channels(
    broker: RedisBroker,
    workers: Mapping[str, FunctionWorker],
    counts: Mapping[str, int] | None = None,
) -> set[bytes]:
    """One for the namespace on one Redis; on a cluster one per shard of each served
    function (a sharded function's scripts publish in their shard's slot): its configured
    count, or its count in ``counts`` (the highest recorded: shard_counts)."""
    if not broker.redis.is_cluster:
        return {broker.wake_channel.encode()}
    counts = counts or {}
    return {
        listened(broker, broker.wake_channel, name)
        for worker in workers.values()
        for name in shard_names(
            worker.name, max(worker.spec.options.shards, counts.get(worker.name, 1))
        )
    }


def shard_names(function: str, shards: int) -> list[str]:
    """The queue's names of a function's shards (``fn``, ``fn#1``, ...): on a cluster each
    is its own slot, so its own shard channels."""
    return [shard_name(function, shard) for shard in range(shards)]


def listened(broker: RedisBroker, channel: str, function: str) -> bytes:
    """The name the listener subscribes ``channel`` by: itself on one Redis; on Redis
    Cluster the shard channel in ``function``'s slot, where its scripts publish it."""
    if broker.redis.is_cluster:
        channel = shard_channel(channel, broker.keys(function).prefix)
    return channel.encode()


async def follow_channels(
    pubsub: TranslatedPubSub,
    subscribed: set[bytes],
    wanted: Mapping[bytes, FunctionWorker | None],
) -> list[FunctionWorker]:
    """Subscribe the channels of ``wanted`` not yet in ``subscribed``, unsubscribe those no
    longer wanted (retired workers', a removed function's wake channel); returns the
    workers whose channel is new, which may park from now on."""
    added = [c for c in wanted if c not in subscribed]
    gone = [c for c in subscribed if c not in wanted]
    if added:
        await pubsub.subscribe(*added)
        subscribed.update(added)
    if gone:
        await pubsub.unsubscribe(*gone)
        subscribed.difference_update(gone)
    return [worker for c in added if (worker := wanted[c]) is not None]
