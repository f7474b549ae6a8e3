"""Sharded pub/sub on Redis Cluster (``SSUBSCRIBE``/``SPUBLISH``, Redis 7), behind the
interface the runtime's subscribers use on one Redis (subscribe, unsubscribe,
get_message, aclose).

On a cluster a classic ``PUBLISH`` is copied to every node over the cluster bus; a shard
channel lives in one slot, so its messages stay on the master of that slot (and its
replicas). The runtime's channels on a cluster carry their function's hash tag
(``{ns:fn}:wake``, ``{ns:fn}:done``, ``{ns:fn}:handoff:<instance>:<n>``; ``keys.py``), so
a script publishes in its own slot and a message travels to one shard.

A subscriber therefore holds one connection per master that serves its channels, with a
reader task each feeding one inbox. The topology is followed without a restart: when a
node fails, or tells us it no longer serves a channel's slot (Redis sends ``sunsubscribe``
to the subscribers of a slot that moved, or of a master that became a replica), the
subscription raises ``BrokerUnavailable`` from ``get_message``; the caller drops it and
subscribes again, as on one Redis after a broken connection, and the new subscription
first refreshes the map of slots, so it lands on the new owners. Messages published
meanwhile are not replayed (pub/sub never is): the subscribers re-read Redis after every
resubscribe (``_wake_all``), as they do on one Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.crc import key_slot

from runtime.errors import BrokerError, BrokerUnavailable
from runtime.observe.supervisor import raise_if_cancelled
from runtime.queue.connection import _TRANSLATED, TranslatedPubSub, _raise_translated

if TYPE_CHECKING:
    from redis.asyncio.cluster import ClusterNode

    from runtime.queue.cluster import ClusterClient

_READ_S = 1.0
Item = dict[str, Any] | BrokerError


class _NodeSubscription:
    """One master's connection and the task that reads it into the shared inbox."""

    def __init__(self, node: ClusterNode, inbox: asyncio.Queue[Item], owner: ShardedPubSub):
        self.name = node.name
        self.pool = aioredis.ConnectionPool(
            connection_class=node.connection_class, **node.connection_kwargs
        )
        self.pubsub = TranslatedPubSub(connection_pool=self.pool)
        self._inbox, self._owner = inbox, owner
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._read(), name=f"shard-sub {self.name}")

    async def _read(self) -> None:
        try:
            while True:
                message = await self.pubsub.get_message(timeout=_READ_S)
                if message is None:
                    continue
                kind, channel = message["type"], message["channel"]
                if kind in ("smessage", b"smessage"):
                    self._inbox.put_nowait(
                        {"type": "message", "channel": channel, "data": message["data"]}
                    )
                elif kind in ("sunsubscribe", b"sunsubscribe") and self._owner.holds(
                    channel, self.name
                ):
                    raise BrokerUnavailable(
                        f"{self.name} no longer serves the slot of shard channel "
                        f"{channel!r} (moved, or failed over)",
                        "sunsubscribe",
                    )
        except BrokerError as exc:
            raise_if_cancelled()
            self._owner.topology_changed = True
            self._inbox.put_nowait(exc)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        with contextlib.suppress(BrokerError, OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.pool.disconnect()


class ShardedPubSub:
    """Shard channels across the masters of a cluster (see the module docstring)."""

    def __init__(self, cluster: ClusterClient) -> None:
        self._cluster = cluster
        self._inbox: asyncio.Queue[Item] = asyncio.Queue()
        self._nodes: dict[str, _NodeSubscription] = {}
        self._where: dict[bytes, str] = {}  # channel -> name of the node it is subscribed on
        self.topology_changed = False

    def holds(self, channel: bytes, node_name: str) -> bool:
        return self._where.get(channel) == node_name

    async def subscribe(self, *channels: str | bytes) -> None:
        try:
            if self._cluster.pubsub_refresh:
                self._cluster.refresh_slots()
                self._cluster.pubsub_refresh = False
            await self._cluster.initialize()
            by_node: dict[str, tuple[ClusterNode, dict[int, list[bytes]]]] = {}
            for raw in channels:
                channel = raw.encode() if isinstance(raw, str) else raw
                node = await self._cluster.node_for(channel)
                by_node.setdefault(node.name, (node, defaultdict(list)))[1][
                    key_slot(channel)
                ].append(channel)
            for node, by_slot in by_node.values():
                subscription = self._nodes.get(node.name)
                if subscription is None:
                    subscription = self._nodes[node.name] = _NodeSubscription(
                        node, self._inbox, self
                    )
                for same_slot in by_slot.values():  # one SSUBSCRIBE may name one slot only
                    await subscription.pubsub.ssubscribe(*same_slot)
                    self._where.update(dict.fromkeys(same_slot, node.name))
                if subscription.task is None:
                    subscription.start()
        except _TRANSLATED as exc:
            self._cluster.pubsub_refresh = True
            _raise_translated(exc, ("SSUBSCRIBE", *channels))
        except BrokerError:
            self._cluster.pubsub_refresh = True
            raise

    async def unsubscribe(self, *channels: str | bytes) -> None:
        for raw in channels:
            channel = raw.encode() if isinstance(raw, str) else raw
            name = self._where.pop(channel, None)
            if name is not None and name in self._nodes:
                await self._nodes[name].pubsub.sunsubscribe(channel)

    async def get_message(self, timeout: float = 0.0, **_: Any) -> dict[str, Any] | None:  # noqa: ASYNC109
        try:
            async with asyncio.timeout(timeout):
                item = await self._inbox.get()
        except TimeoutError:
            return None
        if isinstance(item, BrokerError):
            self._cluster.pubsub_refresh = True
            raise item
        return item

    async def aclose(self) -> None:
        nodes, self._nodes = list(self._nodes.values()), {}
        self._where.clear()
        for subscription in nodes:
            await subscription.close()
